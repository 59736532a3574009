/** A push-to-pull queue: producers push values, one consumer iterates them. A consumer that
 * stops early (`break` out of `for await`, or `return()`) calls `onReturn`, which the engines
 * use to abort the generation behind the stream.
 *
 * It also tells the producer how far the consumer has got: an item is consumed when the
 * consumer asks for the next one after it (its loop body has run), so that flow control can
 * wait on the consumer's code and not only on the item's arrival. */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private waiting: ((r: IteratorResult<T>) => void) | null = null;
  private failWaiting: ((e: unknown) => void) | null = null;
  private done = false;
  private error: unknown = null;
  /** An item was handed to the consumer, which has not asked for the next one yet. */
  private delivered = false;
  /** Waiters for the consumer to have consumed everything pushed (see `idle`). */
  private idlers: (() => void)[] = [];

  /** `onConsumed` runs once per item, when the consumer asks for the one after it. */
  constructor(
    private readonly onReturn: () => void = () => {},
    private readonly onConsumed: () => void = () => {},
  ) {}

  push(item: T): void {
    if (this.done) return;
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = this.failWaiting = null;
      this.delivered = true;
      resolve({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  close(error?: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = error ?? null;
    this.wake();
    if (this.waiting) {
      const [resolve, reject] = [this.waiting, this.failWaiting];
      this.waiting = this.failWaiting = null;
      if (error !== undefined && reject) reject(error);
      else resolve({ value: undefined, done: true });
    }
  }

  /** Resolves once the consumer has consumed every item pushed so far (it is waiting for the
   * next one), or the stream has ended. A producer that awaits this before making the next
   * item never runs ahead of the consumer's loop; only a consumer that always iterates (the
   * worker's own) may be waited on so, since a page may read its streams in any order. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idlers.push(resolve));
  }

  private isIdle(): boolean {
    return this.done || (this.items.length === 0 && !this.delivered);
  }

  private wake(): void {
    if (!this.isIdle()) return;
    const idlers = this.idlers;
    this.idlers = [];
    for (const resolve of idlers) resolve();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    const finish = (): Promise<IteratorResult<T>> => {
      const wasOpen = !this.done;
      this.items = [];
      this.done = true;
      this.error = null;
      this.delivered = false;
      this.wake();
      if (wasOpen) this.onReturn();
      return Promise.resolve({ value: undefined, done: true });
    };
    return {
      next: (): Promise<IteratorResult<T>> => {
        if (this.delivered) {
          this.delivered = false;
          this.onConsumed();
        }
        const item = this.items.shift();
        if (item !== undefined) {
          this.delivered = true;
          return Promise.resolve({ value: item, done: false });
        }
        this.wake();
        if (this.done) {
          return this.error !== null ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          this.waiting = resolve;
          this.failWaiting = reject;
        });
      },
      return: finish,
      throw: (e?: unknown): Promise<IteratorResult<T>> => {
        void finish();
        return Promise.reject(e);
      },
    };
  }
}
