/**
 * Calls `send(i)` for i = 0..count-1 with at most `window` calls unsettled at a time, in order of
 * i; resolves when all have settled, rejects with the first failure.
 */
export async function pump(count: number, window: number, send: (i: number) => Promise<void>): Promise<void> {
    let next = 0;
    const lane = async (): Promise<void> => {
        while (next < count) {
            const i = next++;
            await send(i);
        }
    };
    await Promise.all(Array.from({ length: Math.min(window, count) }, lane));
}

/**
 * How many messages a run sends first, untimed, so that the timed ones find the JIT warm and the
 * connections busy: a fifth of the measured count, at most 2000.
 */
export function warmUpCount(messages: number): number {
    return Math.min(2000, Math.floor(messages / 5));
}

/** Resolves once `done()` is true (checked at each `poke()`), or rejects after `timeoutMs`. */
export function until(done: () => boolean, timeoutMs: number, what: string): { promise: Promise<void>; poke: () => void } {
    let resolve!: () => void;
    let reject!: (err: Error) => void;
    const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
    const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    const poke = (): void => {
        if (done()) {
            clearTimeout(timer);
            resolve();
        }
    };
    poke();
    return { promise, poke };
}
