/**
 * One run of an async task at a time: a call while a run is in flight gets that run's promise
 * instead of starting another. Used for idempotent, concurrency-safe open() and close().
 * Internal to the package.
 */
export class SharedRun {
    private _current: Promise<void> | null = null;

    /** The run in flight, or null. */
    public get current(): Promise<void> | null {
        return this._current;
    }

    /** Waits for the run in flight, if any, ignoring how it ends (awaiting it always yields a turn). */
    public async settled(): Promise<void> {
        await this._current?.catch(() => undefined);
    }

    /** Starts `task` unless a run is in flight; resolves or rejects as the run does. */
    public run(task: () => Promise<void>): Promise<void> {
        if (this._current) return this._current;
        const current = task().finally(() => {
            if (this._current === current) this._current = null;
        });
        this._current = current;
        return current;
    }
}
