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
