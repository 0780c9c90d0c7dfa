// A process function in Node (the http module only). Nimbus starts
// `node server.js` with PORT set and proxies requests to it.
const http = require("http");

const server = http.createServer((req, res) => {
  console.log("node handling", req.url); // goes to the invocation's log
  const body = JSON.stringify({
    runtime: "node",
    greeting: process.env.GREETING || "",
    path: req.url,
    invocation: req.headers["x-nimbus-invocation-id"] || "",
  });
  res.writeHead(200, { "Content-Type": "application/json" });
  res.end(body);
});

server.listen(Number(process.env.PORT));
// Stop cleanly on SIGTERM (Nimbus sends it, then SIGKILL after a grace period).
process.on("SIGTERM", () => server.close(() => process.exit(0)));
