// dynalite on STORE_PORT (host networking: 127.0.0.1), tables active at once.
const dynalite = require('dynalite');
const port = Number(process.env.STORE_PORT || 8000);
dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 }).listen(port, '127.0.0.1', () => {
  console.log(`store listening on 127.0.0.1:${port}`);
});
process.on('SIGTERM', () => process.exit(0));
