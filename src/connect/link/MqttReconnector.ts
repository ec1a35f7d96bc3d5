import type { MqttClient } from 'mqtt';

import { clearReconnectTimer, reconnectNow } from './mqttInternals';

/** The share of each wait taken off at random, so clients that lost a broker together do not all return together. */
export const RECONNECT_JITTER = 0.25;

/**
 * The wait before a connection attempt: `base` before the first attempt after a loss
 * (`attempt` 0), doubling with each failed attempt up to `max`, then shortened at random by up
 * to a quarter (never below 1 ms).
 *
 * @param random a number in [0, 1); Math.random() by default.
 */
export function backoffDelay(attempt: number, base: number, max: number, random: number = Math.random()): number {
    const full = Math.min(max, base * 2 ** attempt);
    return Math.max(1, Math.round(full * (1 - RECONNECT_JITTER * random)));
}


/** What a reconnector reports to its connection. */
export interface MqttReconnectorEvents {
    /** MQTT.js made no progress for `idleMs` while disconnected; the watchdog has restarted it. */
    onStalled(idleMs: number): void;
}

/**
 * The events that show MQTT.js is still working on the connection. Not 'packetreceive': while
 * disconnected the only packet is a CONNACK, which ends in 'connect' or 'error' anyway, and a
 * listener on every packet would cost every message a call.
 */
const PROGRESS_EVENTS = ['connect', 'reconnect', 'close', 'error', 'offline'] as const;

/**
 * Drives MQTT.js's reconnects with exponential backoff and jitter, and watches that they never
 * stop while the connection is open.
 *
 * MQTT.js waits a fixed `reconnectPeriod` before each attempt, reading it whenever it arms its
 * timer after a lost connection or a failed attempt. The reconnector sets that period to the
 * next backoff wait at each attempt ('reconnect'), and back to the first wait once a connection
 * has stayed up for `stableAfter` ms: a broker that accepts and then drops the client at once
 * (another client with the same id, say) keeps it backing off instead of retrying at the first
 * wait forever. This keeps MQTT.js's own reconnect logic (its stores of unacknowledged QoS 1/2
 * messages, its failover across servers) and changes only the timing.
 *
 * The watchdog checks every `interval` ms: when the client has been disconnected with no sign of
 * progress (no attempt, connect, close or error) for longer than an attempt and the current wait
 * can take, MQTT.js is stuck (a lost timer, an end that never completed). It then ends whatever
 * attempt hangs and starts a new one.
 */
export class MqttReconnector {
    private _attempt = 0;
    private _lastProgress = Date.now();
    private _enabled = true;
    private _watchdog: NodeJS.Timeout | null = null;
    private _stable: NodeJS.Timeout | null = null;
    private readonly _progress = (): void => { this._lastProgress = Date.now(); };
    private readonly _onReconnect = (): void => {
        this._attempt++;
        this.setPeriod(this._attempt);
    };
    private readonly _onConnect = (): void => {
        this.clearStable();
        this._stable = setTimeout(() => {
            this._stable = null;
            this._attempt = 0;
            this.setPeriod(0);
        }, this._stableAfter);
        this._stable.unref();
    };
    private readonly _onClose = (): void => this.clearStable();
    /**
     * The longest a connection attempt may take, when longer than MQTT.js's `connectTimeout`: after
     * open(), an attempt to a server that accepted gets the whole connect_timeout (see MqttLink).
     */
    public longestAttempt = 0;

    public constructor(
        private readonly _client: MqttClient,
        private readonly _base: number,
        private readonly _max: number,
        private readonly _events: MqttReconnectorEvents,
        private readonly _stableAfter: number = Math.min(_max, 10000),
        private readonly _interval: number = Math.min(5000, Math.max(500, _base)),
    ) {
        // No reconnects asked for (retry_connect off, one server): nothing to drive or watch.
        if (_client.options.reconnectPeriod === 0) {
            this._enabled = false;
            return;
        }
        this.setPeriod(0);
        _client.on('reconnect', this._onReconnect);
        _client.on('connect', this._onConnect);
        _client.on('close', this._onClose);
        for (const event of PROGRESS_EVENTS) _client.on(event, this._progress);
        this._watchdog = setInterval(() => this.check(), this._interval);
        this._watchdog.unref();
    }

    /** The wait MQTT.js arms (or has armed) before its next attempt, in milliseconds. */
    public get nextDelay(): number {
        return this._client.options.reconnectPeriod ?? 0;
    }

    /** Stops reconnecting for good (retry_connect off): MQTT.js makes no more attempts. */
    public disable(): void {
        this._enabled = false;
        this._client.options.reconnectPeriod = 0;
        this.stopWatchdog();
        this.clearStable();
    }

    /** Detaches from the client and stops the watchdog; call before ending the client. */
    public stop(): void {
        this._enabled = false;
        this.stopWatchdog();
        this.clearStable();
        this._client.off('reconnect', this._onReconnect);
        this._client.off('connect', this._onConnect);
        this._client.off('close', this._onClose);
        for (const event of PROGRESS_EVENTS) this._client.off(event, this._progress);
    }

    private stopWatchdog(): void {
        if (this._watchdog) clearInterval(this._watchdog);
        this._watchdog = null;
    }

    private clearStable(): void {
        if (this._stable) clearTimeout(this._stable);
        this._stable = null;
    }

    private setPeriod(attempt: number): void {
        if (this._enabled) this._client.options.reconnectPeriod = backoffDelay(attempt, this._base, this._max);
    }

    private check(): void {
        const client = this._client;
        const now = Date.now();
        if (!this._enabled || client.connected) {
            this._lastProgress = now;
            return;
        }
        const idle = now - this._lastProgress;
        const limit = Math.max(client.options.connectTimeout ?? 30000, this.longestAttempt) + this.nextDelay + this._interval;
        if (idle < limit) return;
        this._lastProgress = now;
        this._events.onStalled(idle);
        // Start over: no timer, not "disconnecting" (only close() ends the client, and it stops us first).
        clearReconnectTimer(client);
        client.disconnecting = false;
        // A hanging attempt: destroying its socket makes MQTT.js handle 'close' and arm its timer.
        const stream = client.stream as MqttClient['stream'] | undefined;
        if (stream && stream.destroyed !== true) stream.destroy();
        else reconnectNow(client);
    }
}
