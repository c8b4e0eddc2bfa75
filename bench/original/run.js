// Not the original's code: the few lines of its cloud-server.js that start the generic relay
// (archive0/rendezvous-server.js, unchanged), with its winston logger as it configured it (a
// console transport on stdout and a file transport writing server.log in the working folder).
// The registration server that fills `cookies` is replaced by BENCH_COOKIES (comma-separated),
// registered up front, as a PUT of the original would have.
var winston = require('winston'),
  vous = require('./archive0/rendezvous-server');

var options = { rendezvousHost: '127.0.0.1', rendezvousPort: Number(process.env.PORT) };
options.logger = new winston.Logger({
  transports: [new winston.transports.Console({ level: 'error' }), new winston.transports.File({ filename: 'server.log' })],
});
options.logger.setLevels(winston.config.syslog.levels);
(process.env.BENCH_COOKIES || '').split(',').forEach(function (c) {
  if (c) vous.cookies[c] = {};
});
vous.listen(options);
