/**
 * A strictly increasing counter kept in flash without writing flash on every
 * increment: the stored value is the *end of a reserved block*. On start the
 * counter resumes at the stored end (values of the block in use when power
 * went are skipped, never reused); a write happens only when a block is used
 * up. With the default block of 32, NVS sees one write per 32 values instead
 * of 32 (protocol-v1 design note "Counters in flash").
 *
 * Only "strictly greater than anything used before" is promised, not
 * density: gaps after a reboot are expected.
 */
import { fail } from '../core/errors.js';
import { u48be, readU48be } from '../core/bytes.js';
import type { Storage } from '../core/platform.js';

export class ReservedCounter {
  private next = -1;
  private reservedEnd = 0;

  constructor(
    private readonly storage: Storage,
    private readonly key: string,
    private readonly blockSize = 32,
  ) {
    if (!Number.isInteger(blockSize) || blockSize < 1) fail('MALFORMED', 'block size must be a positive integer');
  }

  /** The next value; persists a new block end first when the current block is used up. */
  async take(): Promise<number> {
    if (this.next < 0) {
      const stored = await this.storage.get(this.key);
      // A value that is not 6 bytes is corruption: refuse rather than restart at 0 and reuse values.
      if (stored !== undefined && stored.length !== 6) fail('STORAGE', `counter ${this.key} is corrupt`);
      const start = stored ? readU48be(stored, 0) : 0;
      this.next = start;
      this.reservedEnd = start;
    }
    if (this.next >= this.reservedEnd) {
      const end = this.next + this.blockSize;
      // Persist the reservation BEFORE handing out any value from it.
      await this.storage.put(this.key, u48be(end));
      this.reservedEnd = end;
    }
    return this.next++;
  }
}
