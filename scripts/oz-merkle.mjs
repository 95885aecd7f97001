#!/usr/bin/env node
// OpenZeppelin's own StandardMerkleTree as a subprocess, so Python can be checked (tests) and
// timed (scripts/benches/merkle.py) against the reference on the very same values.
//
//   node scripts/oz-merkle.mjs build VALUES.json OUT.json [--no-proofs]
//     VALUES.json: [["0x..", "123"], ...]; OUT.json: {root, seconds, dump, proofs?}
//     `seconds` times StandardMerkleTree.of alone (no file or JSON work), after a warm-up.
//   node scripts/oz-merkle.mjs load DUMP.json OUT.json
//     StandardMerkleTree.load (which validates the tree) on a dump; OUT.json: {root, proofs}
import { StandardMerkleTree } from '@openzeppelin/merkle-tree';
import { readFileSync, writeFileSync } from 'node:fs';

const [cmd, input, output, ...flags] = process.argv.slice(2);
if (!['build', 'load'].includes(cmd) || !input || !output) {
  console.error('usage: oz-merkle.mjs build VALUES.json OUT.json [--no-proofs] | load DUMP.json OUT.json');
  process.exit(2);
}
const text = readFileSync(input, 'utf8');
const out = {};
let tree;
if (cmd === 'build') {
  const values = JSON.parse(text);
  // Warm the JIT on a small tree first, so the timed call is OpenZeppelin at its best.
  StandardMerkleTree.of(values.slice(0, 64), ['address', 'uint256']);
  const t0 = process.hrtime.bigint();
  tree = StandardMerkleTree.of(values, ['address', 'uint256']);
  out.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  out.dump = JSON.stringify(tree.dump());
} else {
  tree = StandardMerkleTree.load(JSON.parse(text));
}
out.root = tree.root;
if (!flags.includes('--no-proofs')) {
  out.proofs = [];
  for (const [i] of tree.entries()) out.proofs.push(tree.getProof(i));
}
writeFileSync(output, JSON.stringify(out));
