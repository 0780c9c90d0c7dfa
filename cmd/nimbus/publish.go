package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

func newPublish(g *globals) *cobra.Command {
	var e cloudevents.Event
	var data string
	cmd := &cobra.Command{
		Use:   "publish APP/TOPIC --type TYPE [-d DATA]",
		Short: "Publish a CloudEvent to a topic",
		Long: `Publish one CloudEvents 1.0 event to a topic the app declares. It returns
once the event is on disk; every trigger subscribed to the topic then gets it
at least once. -d takes the data itself, @file, or @- for standard input.
The id defaults to a fresh one: publishing the same --source and --id twice
within the duplicate window (10m) stores and delivers it once.`,
		Example: `  nimbus publish shop/orders --type order.created --subject eu/42 -d '{"total": 12}'
  nimbus publish shop/orders --type order.created --id order-42 -d @order.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, topic, ok := strings.Cut(args[0], "/")
			if !ok || app == "" || topic == "" {
				return fmt.Errorf("%q is not APP/TOPIC (for example shop/orders)", args[0])
			}
			body, err := readData(data)
			if err != nil {
				return err
			}
			e.SpecVersion = cloudevents.SpecVersion
			if e.ID == "" {
				e.ID = telemetry.NewInvocationID()
			}
			if len(body) > 0 {
				e.Data = body
				if e.DataContentType == "" {
					e.DataContentType = "text/plain"
					if json.Valid(body) {
						e.DataContentType = "application/json"
					}
				}
			}
			e.Time = time.Now().UTC()
			if err := e.Validate(); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.Publish(cmd.Context(), app, topic, &e)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, map[string]any{"id": e.ID, "source": e.Source, "duplicate": res.Duplicates > 0})
			}
			if res.Duplicates > 0 {
				fmt.Printf("event %s was already published (same source and id): stored and delivered once\n", e.ID)
				return nil
			}
			fmt.Printf("published %s to %s/%s\n", e.ID, app, topic)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&e.Type, "type", "", "event type, such as order.created (required)")
	f.StringVar(&e.Source, "source", "/nimbus/cli", "event source (a URI reference)")
	f.StringVar(&e.Subject, "subject", "", "event subject")
	f.StringVar(&e.ID, "id", "", "event id (default: a fresh one)")
	f.StringVar(&e.DataContentType, "content-type", "", "data content type (default: application/json if the data is JSON, else text/plain)")
	f.StringVarP(&data, "data", "d", "", "event data: text, @file, or @- for standard input")
	cmd.MarkFlagRequired("type")
	return cmd
}
