// The guide's bar: a stateless makePayment endpoint in Node (cluster of one process per core,
// node:crypto). It decrypts and parses cardData and answers OK; it keeps no store and checks no
// token, so it does strictly less than psp-worker. Used by ../node-bar.sh, side by side with ours.
//
//   node server.js PRIVATE_KEY_PEM PORT      (PORT 0: a free port, the one in the "listening on" line)
'use strict';
const cluster = require('node:cluster');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');

const [keyPath, port] = process.argv.slice(2);
if (cluster.isPrimary) {
  const n = Number(process.env.NODE_WORKERS || os.availableParallelism());
  for (let i = 0; i < n; i++) cluster.fork();
  // Said once every worker's server is bound (a port already taken never gets here). The port is the
  // one bound: with PORT 0 the workers share the one the primary's handle got.
  let bound;
  cluster.on('listening', (worker, address) => {
    if (bound !== undefined && address.port !== bound) { console.error(`workers on ports ${bound} and ${address.port}`); process.exit(1); }
    bound = address.port;
    if (--pending === 0) console.log(`listening on 127.0.0.1:${bound}`);
  });
  let pending = n;
} else {
  const key = crypto.createPrivateKey(fs.readFileSync(keyPath));
  const answer = (res, status, id, error) => {
    const body = JSON.stringify(error
      ? { errorMessage: error, paymentInfo: { pspTransactionId: id, status: 'FAIL' } }
      : { paymentInfo: { pspTransactionId: id, status: 'OK' } });
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };
  http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let request;
      try { request = JSON.parse(Buffer.concat(chunks)); } catch { return answer(res, 400, '', { errorId: 71, errorText: 'Invalid request' }); }
      const id = request.pspTransactionId || '';
      let fields;
      try {
        const clear = crypto.privateDecrypt(
          { key, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
          Buffer.from(request.cardData, 'base64'));
        fields = clear.toString('latin1').split(',');
        clear.fill(0);
      } catch { return answer(res, 200, id, { errorId: 92, errorText: 'Unable to decrypt' }); }
      if (fields.length !== 3 || !/^\d{16,19}$/.test(fields[0]) || !/^\d{4}$/.test(fields[1])) {
        return answer(res, 200, id, { errorId: 92, errorText: 'Unable to decrypt' });
      }
      answer(res, 200, id, null);
    });
  }).listen(Number(port), '127.0.0.1');
}
