import type { MqttConnectionState, MqttConnectionStatus, MqttStateListener } from './MqttConnectionStatus';
import { toError } from './errors/MqttErrors';

/**
 * The state of an [[MqttConnection]], when it was entered, and the listeners told of each change.
 */
export class MqttStateTracker {
    private _state: MqttConnectionState = 'closed';
    private _since = new Date();
    private readonly _listeners = new Set<MqttStateListener>();
    /** Statuses not yet handed to the listeners: a listener may change the state (close() on 'disconnected'). */
    private readonly _queue: MqttConnectionStatus[] = [];
    private _notifying = false;

    /**
     * @param _status        the full status to hand to listeners (read after the change).
     * @param _listenerFailed called with what a listener threw; the listener is kept.
     */
    public constructor(
        private readonly _status: () => MqttConnectionStatus,
        private readonly _listenerFailed: (err: Error) => void,
    ) {}

    public get state(): MqttConnectionState {
        return this._state;
    }

    public get since(): Date {
        return this._since;
    }

    public add(listener: MqttStateListener): void {
        this._listeners.add(listener);
    }

    public remove(listener: MqttStateListener): void {
        this._listeners.delete(listener);
    }

    /**
     * Moves to a state; a move to the current state does nothing. Listeners get every change in
     * order, even when one of them changes the state again.
     */
    public set(state: MqttConnectionState): void {
        if (state === this._state) return;
        this._state = state;
        this._since = new Date();
        this._queue.push(this._status());
        if (this._notifying) return;
        this._notifying = true;
        try {
            for (let status = this._queue.shift(); status; status = this._queue.shift()) this.notify(status);
        } finally {
            this._notifying = false;
        }
    }

    private notify(status: MqttConnectionStatus): void {
        for (const listener of [...this._listeners]) {
            try {
                listener(status);
            } catch (err) {
                this._listenerFailed(toError(err));
            }
        }
    }
}
