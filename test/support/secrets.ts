/** Collects every secret a test handled, to search logs for them afterwards. */
export class SecretLedger {
  private readonly items = new Set<string>();

  /** Remembers a secret, code or cookie (ignores short strings that would match by accident). */
  add(...values: Array<string | undefined>): void {
    for (const v of values) if (v && v.length >= 6) this.items.add(v);
  }

  /** The secrets that appear in `text`. */
  leakedIn(text: string): string[] {
    return [...this.items].filter((s) => text.includes(s));
  }

  get size(): number {
    return this.items.size;
  }
}
