/**
 * The order test files start in: the longest first, so that two workers end together rather than
 * one finishing a long file alone at the end. Vitest orders by the durations of the last run when
 * it has them (node_modules/.vite), which a fresh `npm ci` (CI) does not: then by file size, which
 * puts a short file of long waits (the cdk CLI's synths, the CLI end to end) in the middle. The
 * files known to take longest start first, in this order; the rest keep vitest's order.
 */
import { relative } from 'node:path';
import type { TestSpecification } from 'vitest/node';
import { BaseSequencer } from 'vitest/node';

/** Measured on a 2-core machine, longest first (docs/development.md has the figures). */
export const LONGEST_FIRST = [
  'test/infra/synth.test.ts',
  'test/cli/cli.test.ts',
  'test/infra/rollout.test.ts',
];

/** Vitest's sequencer with LONGEST_FIRST moved to the front. */
export default class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (f: TestSpecification) => {
      const i = LONGEST_FIRST.indexOf(relative(f.project.config.root, f.moduleId).split('\\').join('/'));
      return i === -1 ? LONGEST_FIRST.length : i;
    };
    // Array.prototype.sort is stable: the others keep vitest's order.
    return sorted.sort((a, b) => rank(a) - rank(b));
  }
}
