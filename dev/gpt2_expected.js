// dev/gpt2_expected.js — GPT-2 token ids from an independent encoder, to test the C tokenizer.
//
//   npm install --prefix dev/npm gpt-3-encoder@1.1.4       once (dev/npm/ is gitignored)
//   node dev/gpt2_expected.js                              rewrite dev/tokenizer_cases/*.ids from *.txt
//   node dev/gpt2_expected.js IN.txt OUT.ids               any other text, e.g. all of Tiny Shakespeare
//
// The reference is the npm package gpt-3-encoder (a JavaScript port of OpenAI's encoder.py that
// ships GPT-2's encoder.json and vocab.bpe). Ids are written one per line, as `data/tokenize
// TOKENIZER encode` writes them, so the two compare with cmp. Each text must be valid UTF-8 (a
// JavaScript string cannot hold other bytes); the script checks that and that decode(encode(text))
// gives the text back.
'use strict';
const fs = require('fs');
const path = require('path');

let encoder;
try {
  encoder = require(path.join(__dirname, 'npm', 'node_modules', 'gpt-3-encoder'));
} catch (e) {
  console.error('gpt-3-encoder is not installed: npm install --prefix dev/npm gpt-3-encoder@1.1.4');
  process.exit(1);
}

function expectedIds(inPath, outPath) {
  const bytes = fs.readFileSync(inPath);
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes)) throw new Error(`${inPath}: not valid UTF-8`);
  const ids = encoder.encode(text);
  if (ids.some(id => !Number.isInteger(id))) throw new Error(`${inPath}: the reference produced an undefined token`);
  if (encoder.decode(ids) !== text) throw new Error(`${inPath}: the reference does not round-trip`);
  fs.writeFileSync(outPath, ids.map(id => id + '\n').join(''));
  console.log(`${path.relative('.', inPath)}: ${bytes.length} bytes -> ${ids.length} tokens -> ${path.relative('.', outPath)}`);
}

const args = process.argv.slice(2);
if (args.length === 2) {
  expectedIds(args[0], args[1]);
} else if (args.length === 0) {
  const dir = path.join(__dirname, 'tokenizer_cases');
  for (const name of fs.readdirSync(dir).filter(n => n.endsWith('.txt')).sort())
    expectedIds(path.join(dir, name), path.join(dir, name.replace(/\.txt$/, '.ids')));
} else {
  console.error('usage: node dev/gpt2_expected.js [IN.txt OUT.ids]');
  process.exit(2);
}
