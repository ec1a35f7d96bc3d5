import { inspect } from 'node:util';

import type { IClientPublishOptions, IClientSubscribeOptions, IPublishPacket, MqttClient } from 'mqtt';
import {
    ConfigParams, InvalidStateException,
    type IConfigurable, type IOpenable, type IReferenceable, type IReferences, type IUnreferenceable,
} from 'pip-services3-commons-nodex';
import { CompositeCounters, CompositeLogger } from 'pip-services3-components-nodex';
import type { IMessageQueueConnection } from 'pip-services3-messaging-nodex';

import { NO_CID, cid, nonEmpty, reportingOf, type MqttReporting } from '../shared/pip';
import { OpenCloseGuard } from '../shared/OpenCloseGuard';
import { MqttConnectionResolver } from './config/MqttConnectionResolver';
import { MQTT_CONNECTION_DEFAULTS } from './config/MqttConfigKeys';
import {
    makeClientId, previewSettings, resolveSettings, type MqttConnectionOptions, type MqttConnectionSettings,
} from './config/MqttConnectionSettings';
import { redactConfig } from './config/redact';
import { MqttErrorCode } from './errors/MqttErrorCode';
import { closedWhileOpening, toError } from './errors/MqttErrors';
import { checkProtocolOptions, checkPublishArguments, checkSubscribeArguments, QOS_0 } from './errors/MqttInputs';
import type { IMqttMessageListener } from './IMqttMessageListener';
import { MqttStateTracker, type MqttConnectionStatus, type MqttStateListener } from './MqttConnectionStatus';
import { CLOSED_STATUS, MqttOpenConnection } from './MqttOpenConnection';
import type { MqttSubscription } from './MqttSubscription';
import { MqttSubscriptions } from './subscriptions/MqttSubscriptions';

/**
 * One MQTT broker connection shared by many subscribers and queues, on MQTT.js. Topic filters are
 * real MQTT filters (see subscribe()), each subscribed at the broker once, at the highest QoS
 * asked, however many listeners share it, and unsubscribed when its last listener leaves.
 *
 * ### Configuration parameters ###
 *
 * Each key in brief; the README's Configuration table says more. Values are checked at open().
 *
 * - __client_id__:               (optional) MQTT client id; default: unique per connection (host name letters + 12 hex digits)
 * - __connection(s)__:           one broker (`connection.*`) or several for failover (`connections.N.*`: all TCP, or all WebSocket),
 *                                 tried in order, from the first again after every loss
 *   - __discovery_key__:         (optional) key to resolve the connection in an IDiscovery
 *   - __uri__:                   (optional) `mqtt://[user[:password]@]host[:port][/path][?client_id=...&connect_timeout=...]`
 *   - __protocol__:              (optional) mqtt (default), mqtts, ws, wss; aliases tcp = mqtt, ssl and tls = mqtts
 *   - __host__:                  host name or IP address (required unless in the uri)
 *   - __port__:                  (optional) port; default by protocol: 1883, 8883, 80, 443
 *   - __path__:                  (optional) WebSocket path for ws and wss (default: /mqtt)
 * - __credential(s)__:           one credential (`credential.*`) or several (`credentials.N.*`, which then replace
 *                                `credential.*`): the first without a store_key, else the first found in a store
 *   - __store_key__:             (optional) key to look the credential up in an ICredentialStore (a key set in both must agree)
 *   - __username__:              (optional) user name
 *   - __password__:              (optional) password
 *   - __ssl_ca_file__:           (optional) PEM file of the CAs to trust (mqtts, wss); default: Node's built-in root certificates
 *   - __ssl_crt_file__:          (optional) PEM file of the client certificate (alias: ssl_cert_file)
 *   - __ssl_key_file__:          (optional) PEM file of the client certificate's private key
 *   - __ssl_passphrase__:        (optional) passphrase of an encrypted private key
 * - __options__:
 *   - __retry_connect__:         (optional) reconnect when the connection is lost, and retry while opening (default: true)
 *   - __connect_timeout__:       (optional) ms open() waits for a connection; N failover servers share it; after open(), a server
 *                                 that accepted the connection has all of it for its CONNACK (default: 30000)
 *   - __reconnect_timeout__:     (optional) ms before the first attempt after a loss, doubling after each failure (default: 1000)
 *   - __max_reconnect_timeout__: (optional) the longest wait between attempts, at least reconnect_timeout (default: 30000)
 *   - __keepalive_timeout__:     (optional) ms of MQTT keepalive, rounded up to seconds; 0 turns it off (default: 60000)
 *   - __clean_session__:         (optional) false: the broker keeps the session; set a fixed client_id with it (default: true)
 *   - __max_offline_messages__:  (optional) publishes held while disconnected, then `MQTT_OFFLINE_LIMIT` (default: 10000)
 *   - __protocol_version__:      (optional) 3 (MQTT 3.1), 4 (MQTT 3.1.1) or 5 (MQTT 5) (default: 4)
 *   - __session_expiry__:        (optional, MQTT 5 only) seconds the broker keeps the session; default: by clean_session
 *   - __broker_assigns_client_id__: (optional, MQTT 5 only) use the client id the broker assigns; not with client_id (default: false)
 *   - __topic_alias_maximum__:   (optional, MQTT 5 only) topic aliases each way, up to the broker's maximum (default: 0, off)
 *   - __ssl_reject_unauthorized__: (optional) refuse an untrusted broker certificate or one for another host (default: true)
 *   - __ssl_server_name__:       (optional) the name the broker's certificate must hold, also the SNI; default: each host
 *   - __max_qos__:               (optional) the highest QoS the broker takes, see getStatus().maxQos (default: 2)
 *   - __will_topic__:            (optional) the last will's topic, published when the connection dies (not at close())
 *   - __will_message__:          (optional) the will's payload, UTF-8 text (default: empty)
 *   - __will_qos__:              (optional) the will's QoS (default: 0)
 *   - __will_retain__:           (optional) publish the will retained (default: false)
 *
 * keepalive_timeout: the Go port's docs say 3000 in one place and 60000 in another; this port uses 60000.
 *
 * ### References ###
 *
 * - `*:logger:*:*:1.0`             (optional) ILogger components to pass log messages
 * - `*:counters:*:*:1.0`           (optional) ICounters components to pass collected measurements
 * - `*:discovery:*:*:1.0`          (optional) IDiscovery services to resolve connections
 * - `*:credential-store:*:*:1.0`   (optional) credential stores to resolve credentials
 *
 * ### Counters ###
 *
 * - `mqtt.published_messages`, `mqtt.received_messages` (increments), `mqtt.publish_time` (timing)
 * - `mqtt.connection_losses`, `mqtt.reconnect_attempts`, `mqtt.reconnects`, `mqtt.watchdog_restarts` (increments)
 * - `mqtt.dropped_messages` (held messages of a persistent session dropped), `mqtt.poison_packets` (increments)
 *
 * ### Strings and poison packets ###
 *
 * Topics, filters, the client id, the user name, the will topic and MQTT 5 string properties must
 * be well-formed UTF-8 of at most 65535 bytes without NUL, control characters or noncharacters
 * (brokers drop the connection on them): anything else is refused before it is sent. A PUBLISH or
 * SUBSCRIBE the broker closes the connection on three times in a row fails with
 * `MQTT_POISON_PACKET` and is not sent again; the connection goes on.
 *
 * ### Health ###
 *
 * isOpen(), isConnected() (the broker is reachable now), getStatus(), addStateListener(); each transition is logged once.
 *
 * ### Example ###
 *
 *     const connection = new MqttConnection();
 *     connection.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://localhost:1883'));
 *     await connection.open('123');
 *     await connection.subscribe('sensors/+/temperature', { qos: 1 }, {
 *         onMessage: (topic, data) => console.log(topic, data.toString()),
 *     });
 *     await connection.publish('sensors/kitchen/temperature', '21.5', { qos: 1 });
 *     await connection.close('123');
 */
export class MqttConnection implements IMessageQueueConnection, IReferenceable, IUnreferenceable, IConfigurable, IOpenable {
    /** The default configuration (the documented defaults of `options.*`). */
    public static readonly defaultConfig: ConfigParams = MQTT_CONNECTION_DEFAULTS;

    protected _defaultConfig: ConfigParams = MQTT_CONNECTION_DEFAULTS;
    /** The logger. */
    protected _logger: CompositeLogger = new CompositeLogger();
    /** The performance counters. */
    protected _counters: CompositeCounters = new CompositeCounters();
    /** The connection resolver. */
    protected _connectionResolver: MqttConnectionResolver = new MqttConnectionResolver();
    /** The configuration as given (without defaults), read at open(). */
    protected _config: ConfigParams = new ConfigParams();
    /** The client id: configured, or unique to this connection; once open, the one in use. */
    protected _clientId: string;
    /** The subscriptions, by filter, with the router that dispatches incoming messages. */
    protected _subscriptions: MqttSubscriptions = new MqttSubscriptions();

    /** The settings open() read; null before it and after configure(). */
    private _settings: MqttConnectionSettings | null = null;
    /** The link and its parts; null while closed. */
    private _open: MqttOpenConnection | null = null;
    private readonly _generatedClientId = makeClientId();
    private readonly _guard = new OpenCloseGuard((correlationId) => closedWhileOpening(correlationId, 'MQTT connection'));
    private _displayUri = '';
    private readonly _state = new MqttStateTracker(() => this.getStatus(),
        (err) => this._logger.error(NO_CID, err, 'MQTT connection state listener failed'));
    /** The logger and counters as the parts see them: read at each use, since references change. */
    private readonly _reporting: MqttReporting = reportingOf(() => this._logger, () => this._counters);

    public constructor() {
        this._clientId = this._generatedClientId;
    }

    // The fields the specification lists: views of the settings open() read or, before that, of
    // what it would read from the configuration alone (see previewSettings).
    /** `options.retry_connect`. */
    protected get _retryConnect(): boolean { return this.effectiveOptions().retryConnect; }
    /** `options.connect_timeout`, in ms. */
    protected get _connectTimeout(): number { return this.effectiveOptions().connectTimeout; }
    /** `options.reconnect_timeout`, in ms. */
    protected get _reconnectTimeout(): number { return this.effectiveOptions().reconnectTimeout; }
    /** `options.keepalive_timeout`, in ms. */
    protected get _keepAliveTimeout(): number { return this.effectiveOptions().keepAliveTimeout; }
    /** The `options.*` section of the configuration, with the defaults applied. */
    protected get _options(): ConfigParams { return this._config.setDefaults(this._defaultConfig).getSection('options'); }

    private effectiveOptions(): MqttConnectionOptions {
        return this._settings ?? previewSettings(this._config, this._generatedClientId);
    }

    /**
     * Configures the component. Values are checked at open(), which raises ConfigException.
     * @param config configuration parameters, see the class description.
     */
    public configure(config: ConfigParams): void {
        this._config = config;
        this._settings = null;
        this._connectionResolver.configure(config.setDefaults(this._defaultConfig));
        this._clientId = nonEmpty(config.getAsNullableString('client_id')) ?? this._generatedClientId;
    }

    /** Sets references: logger, counters, discovery and credential store. */
    public setReferences(references: IReferences): void {
        this._logger.setReferences(references);
        this._counters.setReferences(references);
        this._connectionResolver.setReferences(references);
    }

    /** Forgets the logger, counters, discovery and credential store. */
    public unsetReferences(): void {
        this._logger = new CompositeLogger();
        this._counters = new CompositeCounters();
        const resolver = new MqttConnectionResolver();
        resolver.configure(this._config.setDefaults(this._defaultConfig));
        this._connectionResolver = resolver;
    }

    /** True between a successful open() and close(), whether or not the broker is reachable right now. */
    public isOpen(): boolean {
        return this._open != null;
    }

    /**
     * Acknowledgement after processing. Called by a listener inside its onMessage() for a QoS 1
     * or 2 message, it keeps the message's last answer (PUBACK; PUBCOMP for QoS 2) back until the
     * returned function is called (once each listener that deferred it has called its own). For
     * QoS 1 a broker that keeps the session (`clean_session` false) sends the message again when
     * the connection ends before (the process killed, a cut); QoS 2 was taken as delivered at its
     * PUBREC, which MQTT.js sends before it hands the message on. Answers go in the order the
     * messages came: a settled one waits for those before it. Until then the broker counts the
     * message against its in-flight window (Mosquitto `max_inflight_messages`, MQTT 5 receive
     * maximum), which holds back further QoS 1/2 messages to this connection's client. Settling
     * after the connection was lost does nothing.
     *
     * @returns the function that acknowledges, or null when there is nothing to defer: QoS 0, a
     *   message MQTT.js answered already (one held for a listener that came later), or a call
     *   outside onMessage().
     */
    public deferAcknowledgement(packet: IPublishPacket): (() => void) | null {
        return this._open?.link.acknowledgements.hold(packet) ?? null;
    }

    /** False with `options.clean_session` false: the broker keeps the subscriptions and queued QoS 1/2 messages. */
    public isCleanSession(): boolean {
        return this.effectiveOptions().cleanSession;
    }

    /** True when the broker is reachable now (false while reconnecting, unlike isOpen()): for health checks. */
    public isConnected(): boolean {
        return this._open?.link.connected === true;
    }

    /** A snapshot of the connection's state and health (see [[MqttConnectionStatus]]). */
    public getStatus(): MqttConnectionStatus {
        return { state: this._state.state, since: this._state.since, clientId: this._clientId, ...(this._open?.status() ?? CLOSED_STATUS) };
    }

    /** Calls the listener with the new status at each change of state; a listener that throws is logged and kept. */
    public addStateListener(listener: MqttStateListener): void {
        this._state.add(listener);
    }

    /** Removes a listener added with addStateListener(). */
    public removeStateListener(listener: MqttStateListener): void {
        this._state.remove(listener);
    }

    /** The MQTT protocol version in use while open (3, 4 or 5), otherwise null. */
    public getProtocolVersion(): 3 | 4 | 5 | null {
        return this._open?.settings.protocolVersion ?? null;
    }

    /** For logs: the broker, client id and state; never credentials. */
    public toString(): string {
        return `MqttConnection(${this._displayUri || 'not opened'}, client_id ${this._clientId}, ${this._state.state})`;
    }

    /** For JSON.stringify: the broker, client id, state and configuration, with secrets replaced by `***`. */
    public toJSON(): Record<string, unknown> {
        return {
            component: 'MqttConnection',
            uri: this._displayUri || null,
            clientId: this._clientId,
            state: this._state.state,
            config: redactConfig(this._config),
        };
    }

    /** For console.log and util.inspect: what toJSON() shows, so no secret is printed. */
    public [inspect.custom](): Record<string, unknown> {
        return this.toJSON();
    }

    /** The MQTT.js client while open, otherwise null. Its `connected` tells whether the broker is reachable now. */
    public getConnection(): MqttClient | null {
        return this._open?.link.client ?? null;
    }

    /** The subscriptions of all listeners (a snapshot). */
    public getSubscriptions(): MqttSubscription[] {
        return this._subscriptions.list();
    }

    /**
     * Opens the connection: resolves after CONNACK, or rejects within `connect_timeout` and then
     * leaves no client, timer or reconnect loop behind. Idempotent; concurrent calls share one attempt.
     *
     * @throws ConfigException for bad configuration; ConnectionException `MQTT_CONNECT_FAILED`,
     *   `MQTT_CONNECT_TIMEOUT`, `MQTT_CONNECT_REFUSED` or `MQTT_TLS_FAILED`; InvalidStateException `MQTT_CLOSED`
     *   when close() is called meanwhile.
     */
    public open(correlationId: string | null): Promise<void> {
        return this._guard.open(correlationId, () => this._open != null, (signal) => this.doOpen(correlationId, signal));
    }

    /** Reads the configuration into the settings and opens the link with its parts (see MqttOpenConnection). */
    private async doOpen(correlationId: string | null, signal: AbortSignal): Promise<void> {
        this._state.set('opening');
        try {
            const settings = await resolveSettings(correlationId, this._connectionResolver, this._config, this._generatedClientId, signal);
            this._settings = settings;
            this._clientId = settings.clientId;
            this._displayUri = settings.connection.displayUri;
            const open = await MqttOpenConnection.start(correlationId, settings, this._subscriptions, this._reporting,
                { changed: (connected) => this.linkChanged(connected), generatedClientId: this._generatedClientId }, signal);
            this._open = open;
            this._clientId = open.clientId;
        } catch (err) {
            this._state.set('closed');
            throw err;
        }
        this._state.set('connected');
    }

    /** The link went down or came back. */
    private linkChanged(connected: boolean): void {
        if (this._guard.closing) return;
        this._state.set(connected ? 'connected' : this._open?.settings.retryConnect === false ? 'disconnected' : 'reconnecting');
    }

    /**
     * Closes the connection: pending publishes and subscribes reject with InvalidStateException
     * `MQTT_CLOSED`, DISCONNECT is sent when connected and nothing is in flight, and it resolves
     * once the client has ended. Drops all subscriptions. Idempotent; concurrent calls share one close.
     */
    public close(correlationId: string | null): Promise<void> {
        return this._guard.close(() => this.doClose(correlationId));
    }

    private async doClose(correlationId: string | null): Promise<void> {
        if (this._guard.opening) {
            this._guard.abortOpening(correlationId);
            await this._guard.openingSettled();
        }
        const open = this._open;
        if (!open) return;
        this._state.set('closing');
        this._open = null;
        await open.end(correlationId);
        this._logger.info(cid(correlationId), 'Closed MQTT connection to %s', this._displayUri);
        this._state.set('closed');
    }

    /** MQTT has no queues to list: always an empty list. */
    public readQueueNames(): Promise<string[]> { return Promise.resolve([]); }
    /** MQTT creates topics on use: does nothing. */
    public createQueue(_name: string): Promise<void> { return Promise.resolve(); }
    /** MQTT has no queues to delete: does nothing. */
    public deleteQueue(_name: string): Promise<void> { return Promise.resolve(); }

    /**
     * Publishes a message. Resolves when MQTT.js has written it (QoS 0) or the broker has
     * acknowledged it (QoS 1 and 2). While the connection is not up (down, or MQTT.js still
     * resending what it kept) and `retry_connect` is on, the message is held and sent once it is.
     *
     * @param topic   a topic name: no wildcards, not empty, at most 65535 bytes, no NUL, control
     *                characters, noncharacters or lone surrogates.
     * @param data    the payload, sent as is.
     * @param options (optional) QoS (default 0), retain, MQTT 5 properties; never modified.
     * @throws BadRequestException for bad input, InvalidStateException `MQTT_NOT_OPENED` or
     *   `MQTT_CLOSED`, ConnectionException `MQTT_NOT_CONNECTED`, `MQTT_PUBLISH_FAILED`, `MQTT_OFFLINE_LIMIT` or
     *   `MQTT_POISON_PACKET` (the broker closed the connection on it three times in a row),
     *   UnsupportedException `MQTT_QOS_NOT_SUPPORTED` (a QoS above what the broker takes) or
     *   `MQTT_FEATURE_NOT_SUPPORTED` (retain, when an MQTT 5 broker has no retained messages).
     */
    public publish(topic: string, data: Buffer | string, options?: IClientPublishOptions): Promise<void> {
        let open: MqttOpenConnection;
        let publishOptions: IClientPublishOptions;
        try {
            publishOptions = checkPublishArguments(topic, data, options);
            open = this.checkOpen();
            if (publishOptions !== QOS_0) checkProtocolOptions(topic, publishOptions, open.settings.protocolVersion);
        } catch (err) {
            return Promise.reject(toError(err));
        }
        // Not async: this is the hot path, where each extra promise per message shows in the
        // benchmark (bench/, scenario 1). The publisher counts and times the publish.
        return open.publisher.publish(topic, data, publishOptions);
    }

    /**
     * Subscribes a listener to a topic filter. Resolves after the broker's SUBACK (or at once
     * when the filter is already subscribed at this QoS or higher). While the connection is down
     * and `retry_connect` is on, it waits for the reconnect.
     *
     * `+` matches one level, `#` the rest (and the parent), a leading wildcard does not match `$`
     * topics, and `$share/<group>/<filter>` is a shared subscription. MQTT 3.1.1 does not say which
     * subscription a message was sent for, so each message goes to every listener whose filter
     * matches its topic: a `$share/g/t` listener also gets the messages of a plain `t` subscription
     * on the same connection. Keep such pairs on separate connections.
     *
     * @param topic     a topic filter (`+`, `#`, `$share/<group>/<filter>`).
     * @param options   (optional) QoS (default 0) and MQTT 5 subscribe flags (nl, rap, rh, properties), which
     *                  all listeners of one filter must share; never modified.
     * @param listener  the listener; subscribing the same listener again to the same filter does nothing.
     * @throws BadRequestException for bad input, InvalidStateException `MQTT_NOT_OPENED` or `MQTT_CLOSED`,
     *   ConnectionException `MQTT_SUBSCRIBE_REJECTED` (SUBACK failure, details.reason_code), `MQTT_QOS_NOT_GRANTED`
     *   (the SUBACK granted a lower QoS), `MQTT_POISON_PACKET` (the broker closed the connection on the SUBSCRIBE
     *   three times in a row) or `MQTT_NOT_CONNECTED`, UnsupportedException `MQTT_QOS_NOT_SUPPORTED` or
     *   `MQTT_FEATURE_NOT_SUPPORTED` (what an MQTT 5 broker's CONNACK says it lacks).
     */
    public async subscribe(topic: string, options: IClientSubscribeOptions | null, listener: IMqttMessageListener): Promise<void> {
        const { parsed, options: subscribeOptions } = checkSubscribeArguments(topic, options, listener);
        const open = this.checkOpen();
        checkProtocolOptions(topic, subscribeOptions, open.settings.protocolVersion);
        open.publisher.support.checkSubscribe(topic, subscribeOptions, parsed.shareGroup !== null, parsed.hasWildcards);
        return this._subscriptions.subscribe(parsed, subscribeOptions, listener);
    }

    /**
     * Removes a listener from a topic filter. It receives nothing more once this returns. When
     * it was the filter's last listener, the broker subscription is dropped: UNSUBSCRIBE,
     * awaited. While the connection is down, or when it drops before the UNSUBACK, this returns
     * at once: a clean session went with the connection, and a persistent one gets its UNSUBSCRIBE
     * after the reconnect (a refusal is then logged). Unknown pairs are ignored. A subscribe() still waiting
     * for the same listener resolves.
     *
     * @throws ConnectionException `MQTT_UNSUBSCRIBE_FAILED` when the broker refuses, or
     *   InvalidStateException `MQTT_CLOSED` when closed meanwhile.
     */
    public unsubscribe(topic: string, listener: IMqttMessageListener): Promise<void> {
        return this._subscriptions.unsubscribe(topic, listener);
    }

    /**
     * Checks that the connection is open.
     * @throws InvalidStateException `MQTT_NOT_OPENED`.
     */
    protected checkOpen(): MqttOpenConnection {
        if (this._open == null) {
            throw new InvalidStateException(NO_CID, MqttErrorCode.NotOpened, 'MQTT connection is not open');
        }
        return this._open;
    }
}
