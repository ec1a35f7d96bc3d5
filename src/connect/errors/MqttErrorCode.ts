/**
 * Stable error codes raised by the MQTT components.
 *
 * Each error is a Pip.Services exception (`ConfigException`, `ConnectionException`,
 * `UnsupportedException`, `InvalidStateException` or `BadRequestException`) whose `code` is one of these values.
 * Codes never change meaning between releases; match on them, not on messages.
 * Protocol detail (MQTT reason code, topic, configuration key) is in the error's `details`
 * (a StringValueMap: read the reason code with `details.getAsInteger('reason_code')`).
 */
export const MqttErrorCode = {
    // ConfigException: raised by open() when the configuration cannot be used.
    /** No connection is configured (none of `connection.*` or `connections.N.*`). */
    NoConnection: 'MQTT_NO_CONNECTION',
    /** A connection has no host (details.key names the key). */
    NoHost: 'MQTT_NO_HOST',
    /** A port is not an integer in 1..65535. */
    BadPort: 'MQTT_BAD_PORT',
    /** A protocol or URI scheme is not one of mqtt, mqtts, ws, wss, tcp, ssl, tls. */
    UnknownProtocol: 'MQTT_UNKNOWN_PROTOCOL',
    /** A `uri` cannot be parsed, has malformed percent-encoding, or carries an unknown query parameter. */
    BadUri: 'MQTT_BAD_URI',
    /**
     * A value is given twice (for example in the `uri` and as its own key) with different values,
     * or failover servers mix TCP and WebSocket, or WebSocket paths.
     */
    ConflictingConfig: 'MQTT_CONFLICTING_CONFIG',
    /**
     * An option has a value that cannot be used: a connection option (timeouts, retry_connect,
     * client_id) or a queue option (topic, options.qos, options.group, options.max_buffered, ...).
     */
    BadOption: 'MQTT_BAD_OPTION',
    /** A discovery_key or store_key could not be resolved through the referenced services. */
    ResolveFailed: 'MQTT_RESOLVE_FAILED',
    /** A message queue has no topic: neither `topic` nor a queue name is configured. */
    NoTopic: 'MQTT_NO_TOPIC',
    /** moveToDeadLetter() on a queue with no `options.dead_letter_topic`. */
    NoDeadLetterTopic: 'MQTT_NO_DEAD_LETTER_TOPIC',
    /** A referenced component found as the queue's connection is not an MqttConnection. */
    BadReference: 'MQTT_BAD_REFERENCE',
    /**
     * A TLS setting cannot be used (details.key names it): a file cannot be read or holds no valid
     * PEM, a client certificate comes without its key, the key does not match the certificate, the
     * passphrase is missing or does not decrypt the key, or TLS files are set for a connection that
     * uses neither mqtts nor wss.
     */
    BadTls: 'MQTT_BAD_TLS',

    // ConnectionException: the broker could not be reached or refused us.
    /** The broker could not be reached (refused, unreachable, DNS failure, socket error). */
    ConnectFailed: 'MQTT_CONNECT_FAILED',
    /** No CONNACK arrived within `options.connect_timeout`. */
    ConnectTimeout: 'MQTT_CONNECT_TIMEOUT',
    /**
     * The broker answered CONNACK with a failure (details.reason_code, and with MQTT 5
     * details.reason_string when the broker gave one), e.g. bad credentials.
     */
    ConnectRefused: 'MQTT_CONNECT_REFUSED',
    /**
     * The TLS handshake failed (details.tls_code): the broker's certificate is not trusted, has
     * expired or does not name the host, or the broker refused our client certificate or its absence.
     */
    TlsFailed: 'MQTT_TLS_FAILED',
    /** The connection is down, or was lost under a pending call, and `retry_connect` is false. */
    NotConnected: 'MQTT_NOT_CONNECTED',
    /** The broker rejected a SUBSCRIBE (details.reason_code). */
    SubscribeRejected: 'MQTT_SUBSCRIBE_REJECTED',
    /**
     * The broker granted a subscription at a lower QoS than asked (details.qos asked,
     * details.granted_qos), as brokers without QoS 2 do. The listener is not added; subscribe at
     * the granted QoS to take what the broker offers.
     */
    QosNotGranted: 'MQTT_QOS_NOT_GRANTED',
    /** The broker rejected an UNSUBSCRIBE, or it could not be sent. */
    UnsubscribeFailed: 'MQTT_UNSUBSCRIBE_FAILED',
    /** A publish failed (broker reason code in details.reason_code, or a client error as cause). */
    PublishFailed: 'MQTT_PUBLISH_FAILED',
    /**
     * A publish while the connection is down found `options.max_offline_messages` publishes
     * already waiting for the broker (details.limit); nothing was queued.
     */
    OfflineLimit: 'MQTT_OFFLINE_LIMIT',

    // UnsupportedException: the broker lacks what the call needs.
    /**
     * A publish or subscribe asks for a QoS above what the broker supports (details.qos,
     * details.max_qos, details.source): `options.max_qos`, the broker's MQTT 5 CONNACK, or what the
     * broker did to an earlier QoS 2 publish (it closed the connection each time it got one, or
     * acknowledged it with PUBACK, as QoS 1; the publish that showed it fails with this code too,
     * with details.delivered `at_least_once`, `no`, or `unknown` for one sent to a broker whose next
     * CONNACK lowered its maximum QoS).
     */
    QosNotSupported: 'MQTT_QOS_NOT_SUPPORTED',
    /**
     * The broker closed the connection on this PUBLISH or SUBSCRIBE again and again, before it
     * answered it (a poison packet): the call fails, the packet is not sent again, and the
     * connection goes on with everything else.
     */
    PoisonPacket: 'MQTT_POISON_PACKET',
    /**
     * A publish or subscribe needs what the broker's MQTT 5 CONNACK says it lacks (details.feature:
     * `retain`, `wildcard_subscriptions`, `shared_subscriptions` or `subscription_identifiers`).
     * Sent anyway, the broker would drop the connection.
     */
    FeatureNotSupported: 'MQTT_FEATURE_NOT_SUPPORTED',

    // InvalidStateException: the component is not in a state for the call.
    /** The connection or queue is not open (publish, subscribe, send, receive... before open() or after close()). */
    NotOpened: 'MQTT_NOT_OPENED',
    /** close() was called while the operation (or open()) was in progress. */
    Closed: 'MQTT_CLOSED',

    // BadRequestException: the caller passed something invalid.
    /** A topic name for publish is empty, too long, has wildcards or a NUL character. */
    InvalidTopic: 'MQTT_INVALID_TOPIC',
    /** A topic filter for subscribe is malformed (wildcard placement, empty, too long, bad $share). */
    InvalidFilter: 'MQTT_INVALID_FILTER',
    /** A QoS is not 0, 1 or 2. */
    InvalidQos: 'MQTT_INVALID_QOS',
    /** A payload is not a Buffer or string, or is too large for MQTT. */
    InvalidPayload: 'MQTT_INVALID_PAYLOAD',
    /** A listener has no onMessage function. */
    InvalidListener: 'MQTT_INVALID_LISTENER',
    /** An options object is not an object, or has a field of the wrong type. */
    InvalidOptions: 'MQTT_INVALID_OPTIONS',
    /** A message queue was given no envelope, or an envelope whose message is not a Buffer or string. */
    InvalidEnvelope: 'MQTT_INVALID_ENVELOPE',
    /** A message queue argument (wait timeout, message count) is not a non-negative number. */
    InvalidArgument: 'MQTT_INVALID_ARGUMENT',
} as const;

/** One of the values of [[MqttErrorCode]]. */
export type MqttErrorCodeValue = typeof MqttErrorCode[keyof typeof MqttErrorCode];
