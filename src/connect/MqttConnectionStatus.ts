import { toError } from './errors/MqttErrors';

/**
 * Where an [[MqttConnection]] is:
 * - `closed`: not open (never opened, closed, or open() failed);
 * - `opening`: open() is waiting for the first CONNACK;
 * - `connected`: open, and the broker is reachable now;
 * - `reconnecting`: open, the connection was lost, and attempts go on (with backoff);
 * - `disconnected`: open, the connection was lost, and `retry_connect` is false: it will not come back;
 * - `closing`: close() is ending the client.
 */
export type MqttConnectionState = 'closed' | 'opening' | 'connected' | 'reconnecting' | 'disconnected' | 'closing';

/** A snapshot of an [[MqttConnection]]'s health, from `getStatus()`. */
export interface MqttConnectionStatus {
    readonly state: MqttConnectionState;
    /** True when the broker is reachable now (state `connected`). */
    readonly connected: boolean;
    /** When the connection entered this state. */
    readonly since: Date;
    /** Connection attempts made since the connection was lost (0 while connected). */
    readonly reconnectAttempts: number;
    /** While reconnecting: the wait in ms that runs (or follows the attempt in progress) before the next attempt; otherwise null. */
    readonly nextAttemptDelay: number | null;
    /** Connections restored since open(). */
    readonly reconnects: number;
    /** The last connection error since the last CONNACK, without credentials, or null. */
    readonly lastError: string | null;
    /**
     * publish() calls not settled yet (waiting to be written or acknowledged). While disconnected,
     * a publish() that finds `max_offline_messages` of them is refused (those in flight when the
     * connection dropped count too, so this can be above the limit).
     */
    readonly pendingPublishes: number;
    /** The client id in use: configured, generated, or (MQTT 5, `broker_assigns_client_id`) assigned by the broker. */
    readonly clientId: string;
    /**
     * While open: the keepalive in seconds in effect. With MQTT 5 a broker may impose its own
     * (server keepalive) instead of `keepalive_timeout`. 0: off. Null while closed.
     */
    readonly keepAlive: number | null;
    /**
     * While open: the highest QoS the broker takes, as far as known: `options.max_qos`, lowered by
     * an MQTT 5 CONNACK or by what the broker did with a QoS 2 publish (see the README's Brokers
     * section). Publishes and subscribes above it are refused. Null while closed.
     */
    readonly maxQos: 0 | 1 | 2 | null;
}

/** Called with the new status whenever the connection changes state. */
export type MqttStateListener = (status: MqttConnectionStatus) => void;

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
