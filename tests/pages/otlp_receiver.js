// otlp_receiver.js <port> — runs npm @elastic/mockotlpserver (a third-party OTLP receiver)
// for OTLP/HTTP on 127.0.0.1:<port> and prints every trace request it receives, normalised
// by the receiver itself (hex ids, attributes as an object), as one JSON line on stdout.
// The first line is {"listening": <port>}. Stopped by SIGTERM.
'use strict';
const {MockOtlpServer, normalizeTrace} = require('@elastic/mockotlpserver');

const port = Number(process.argv[2]);
const server = new MockOtlpServer({
  services: ['http'],
  httpHostname: '127.0.0.1',
  httpPort: port,
  logLevel: 'warn',
  onTrace: (trace) => process.stdout.write(JSON.stringify(normalizeTrace(trace)) + '\n'),
});
Promise.resolve(server.start()).then(() => {
  process.stdout.write(JSON.stringify({listening: port}) + '\n');
});
process.on('SIGTERM', () => {
  Promise.resolve(server.close()).then(() => process.exit(0));
});
