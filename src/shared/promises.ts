// Waiting for a promise, bounded: by an abort signal, or by a time.

/** Node timers overflow beyond this many milliseconds (about 24.8 days). */
const MAX_TIMER_MS = 2147483647;

/**
 * True when `promise` fulfils within `ms`, false after; rejects as it does within `ms`. A later
 * rejection is handled (by the race), and no timer outlives the call.
 */
export async function settlesWithin(promise: Promise<void>, ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
        return await Promise.race([
            promise.then(() => true),
            new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), Math.min(ms, MAX_TIMER_MS)); }),
        ]);
    } finally {
        clearTimeout(timer);
    }
}

/** Settles like `promise`, or rejects with the signal's reason once it is aborted. */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<T>((resolve, reject) => {
        const onAbort = (): void => reject(signal.reason as Error);
        signal.addEventListener('abort', onAbort, { once: true });
        promise.then((value) => {
            signal.removeEventListener('abort', onAbort);
            resolve(value);
        }, (err: Error) => {
            signal.removeEventListener('abort', onAbort);
            reject(err);
        });
    });
}
