package nimbus

import "testing"

// TestStepEffectsOptions: a step journals its effects unless it is given
// ImmediateEffects; the deprecated JournaledEffects asks for the default,
// and the last of the two options wins.
func TestStepEffectsOptions(t *testing.T) {
	for _, c := range []struct {
		name      string
		opts      []StepOption
		immediate bool
	}{
		{"default", nil, false},
		{"retry only", []StepOption{Retry{MaxAttempts: 2}}, false},
		{"immediate", []StepOption{ImmediateEffects()}, true},
		{"journaled (deprecated)", []StepOption{JournaledEffects()}, false},
		{"immediate then journaled", []StepOption{ImmediateEffects(), JournaledEffects()}, false},
		{"journaled then immediate", []StepOption{JournaledEffects(), Retry{}, ImmediateEffects()}, true},
	} {
		var cfg stepConfig
		for _, o := range c.opts {
			o.applyStep(&cfg)
		}
		if cfg.immediate != c.immediate {
			t.Errorf("%s: immediate = %v, want %v", c.name, cfg.immediate, c.immediate)
		}
	}
}

// TestCompensateKeepsDefaultRetry: a compensation given options without a
// Retry (ImmediateEffects) keeps DefaultCompensationRetry; a Retry
// replaces it.
func TestCompensateKeepsDefaultRetry(t *testing.T) {
	wf := &Workflow{}
	wf.Compensate("a", func() error { return nil }, ImmediateEffects())
	wf.Compensate("b", func() error { return nil }, Retry{MaxAttempts: 1})
	for i, want := range []Retry{DefaultCompensationRetry, {MaxAttempts: 1}} {
		var cfg stepConfig
		for _, o := range wf.comps[i].opts {
			o.applyStep(&cfg)
		}
		if cfg.retry.MaxAttempts != want.MaxAttempts || cfg.retry.Backoff != want.Backoff {
			t.Errorf("compensation %s: retry %+v, want %+v", wf.comps[i].name, cfg.retry, want)
		}
	}
	var cfg stepConfig
	for _, o := range wf.comps[0].opts {
		o.applyStep(&cfg)
	}
	if !cfg.immediate {
		t.Error("compensation a lost ImmediateEffects")
	}
}
