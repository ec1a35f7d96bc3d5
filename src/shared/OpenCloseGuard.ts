/**
 * One run of an async task at a time: a call while a run is in flight gets that run's promise
 * instead of starting another.
 */
class SharedRun {
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

/**
 * Makes a component's open() and close() idempotent and safe when called concurrently, as
 * MqttConnection and MqttMessageQueue need them:
 * - a second open() while one is in flight shares its promise, and so does a second close();
 * - an open() made while closing waits for the close, and fails (`closedWhileOpening`) when yet
 *   another close() came meanwhile;
 * - a close() while opening aborts the open's signal with `closedWhileOpening`, and the open()
 *   rejects with it once it sees the signal.
 * Internal to the package.
 */
export class OpenCloseGuard {
    private readonly _opening = new SharedRun();
    private readonly _closing = new SharedRun();
    /** Counts close() calls: an open() queued behind a close() fails when another close() came meanwhile. */
    private _closeCalls = 0;
    /** Aborts the open() in flight. */
    private _abort: AbortController | null = null;

    /** @param _closedWhileOpening the error of an open() that a close() ended. */
    public constructor(private readonly _closedWhileOpening: (correlationId: string | null) => Error) {}

    /** The open() in flight, or null. */
    public get opening(): Promise<void> | null {
        return this._opening.current;
    }

    /** The close() in flight, or null. */
    public get closing(): Promise<void> | null {
        return this._closing.current;
    }

    /**
     * Runs `open` unless the component `isOpen()` already (and no open() is in flight), sharing a
     * run in flight. `open` receives the signal that a close() aborts.
     */
    public async open(correlationId: string | null, isOpen: () => boolean, open: (signal: AbortSignal) => Promise<void>): Promise<void> {
        // Only when closing: an await here would let a close() made right after open() miss it.
        if (this._closing.current) {
            const closes = this._closeCalls;
            await this._closing.settled();
            if (this._closeCalls !== closes) throw this._closedWhileOpening(correlationId);
        }
        if (isOpen() && !this._opening.current) return;
        return this._opening.run(async () => {
            const abort = this._abort = new AbortController();
            try {
                await open(abort.signal);
            } finally {
                if (this._abort === abort) this._abort = null;
            }
        });
    }

    /** Runs `close`, sharing a close in flight; `close` may call abortOpening(). */
    public close(close: () => Promise<void>): Promise<void> {
        this._closeCalls++;
        return this._closing.run(close);
    }

    /** Aborts the open() in flight, if any, with `closedWhileOpening` (see openingSettled()). */
    public abortOpening(correlationId: string | null): void {
        this._abort?.abort(this._closedWhileOpening(correlationId));
    }

    /** Waits for the open() in flight, if any, however it ends. */
    public openingSettled(): Promise<void> {
        return this._opening.settled();
    }
}
