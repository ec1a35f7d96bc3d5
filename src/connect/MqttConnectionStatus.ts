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
