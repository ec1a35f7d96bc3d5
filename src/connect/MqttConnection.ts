import { inspect } from 'node:util';

import type { IClientPublishOptions, IClientSubscribeOptions, MqttClient } from 'mqtt';
import {
    BadRequestException, ConfigParams, InvalidStateException,
    type IConfigurable, type IOpenable, type IReferenceable, type IReferences, type IUnreferenceable,
} from 'pip-services3-commons-nodex';
import { CompositeCounters, CompositeLogger } from 'pip-services3-components-nodex';
import type { IMessageQueueConnection } from 'pip-services3-messaging-nodex';

import { NO_CID, cid, nonEmpty, type MqttReporting } from '../shared/pip';
import { OpenCloseGuard } from '../shared/OpenCloseGuard';
import { MqttConnectionResolver } from './config/MqttConnectionResolver';
import {
    MQTT_CONNECTION_DEFAULTS, makeClientId, readSettings, resolveSettings, type MqttConnectionOptions, type MqttConnectionSettings,
} from './config/MqttConnectionSettings';
import { redactConfig } from './config/redact';
import { MqttErrorCode } from './errors/MqttErrorCode';
import { toError } from './errors/MqttErrors';
import { checkListener, checkPayload, checkProtocolOptions, checkPublishOptions, checkSubscribeOptions, QOS_0 } from './errors/MqttInputs';
import type { IMqttMessageListener } from './IMqttMessageListener';
import { MqttLink } from './link/MqttLink';
import { MqttStateTracker, type MqttConnectionStatus, type MqttStateListener } from './MqttConnectionStatus';
import { MqttPublisher } from './publish/MqttPublisher';
import type { MqttSubscription } from './MqttSubscription';
import { MqttDispatcher } from './subscriptions/MqttDispatcher';
import { MqttSubscriptions } from './subscriptions/MqttSubscriptions';
import { checkTopicName, parseFilter } from './subscriptions/MqttTopics';

/** What lives from a successful open() to close(). */
interface MqttOpenConnection {
    readonly settings: MqttConnectionSettings;
    readonly link: MqttLink;
    readonly publisher: MqttPublisher;
    readonly dispatcher: MqttDispatcher;
}

/**
 * One MQTT broker connection shared by many subscribers and queues, on MQTT.js.
 *
 * Topic filters are real MQTT filters: `+` matches one level, `#` the rest (and the parent),
 * a leading wildcard does not match `$` topics, and `$share/<group>/<filter>` is a shared
 * subscription. Each filter is subscribed at the broker once, at the highest QoS asked, however
 * many listeners share it, and unsubscribed when its last listener leaves.
 *
 * MQTT 3.1.1 does not say which subscription a message was sent for, so each message goes to
 * every listener whose filter matches its topic: a `$share/g/t` listener also gets the messages
 * of a plain `t` subscription on the same connection. Keep such pairs on separate connections.
 *
 * ### Configuration parameters ###
 *
 * - __client_id__:               (optional) MQTT client id; default: unique per connection, up to 11 letters and digits
 *                                of the host name and 12 random hex digits (at most 23 characters)
 * - __connection(s)__:           one broker (`connection.*`) or several for failover (`connections.N.*`: all TCP,
 *                                or all WebSocket with one path; without retry_connect, open() tries each once)
 *   - __discovery_key__:         (optional) key to resolve the connection in an IDiscovery
 *   - __uri__:                   (optional) `mqtt://[user[:password]@]host[:port][/path][?client_id=...&connect_timeout=...]`
 *   - __protocol__:              (optional) mqtt (default), mqtts, ws, wss; aliases tcp = mqtt, ssl and tls = mqtts
 *   - __host__:                  host name or IP address (required unless in the uri)
 *   - __port__:                  (optional) port; default by protocol: 1883, 8883, 80, 443
 *   - __path__:                  (optional) WebSocket path for ws and wss (default: /mqtt)
 * - __credential(s)__:           one credential (`credential.*`) or several (`credentials.N.*`, which then replace
 *                                `credential.*`): the first without a store_key, else the first found in a store
 *   - __store_key__:             (optional) key to look the credential up in an ICredentialStore
 *   - __username__:              (optional) user name
 *   - __password__:              (optional) password
 *   - __ssl_ca_file__:           (optional) PEM file of the certificate authorities that sign the broker's certificate
 *                                (mqtts, wss); default: Node's built-in root certificates
 *   - __ssl_crt_file__:          (optional) PEM file of the client certificate, for brokers that require one
 *                                (alias: ssl_cert_file)
 *   - __ssl_key_file__:          (optional) PEM file of the client certificate's private key
 *   - __ssl_passphrase__:        (optional) passphrase of an encrypted private key
 *
 *   Every credential key may come from an ICredentialStore (`store_key`) or from the configuration;
 *   a key set in both must agree. TLS files are read and checked at open(): an unreadable file,
 *   a wrong passphrase or a key that does not match its certificate is a ConfigException
 *   `MQTT_BAD_TLS` naming the key.
 * - __options__:
 *   - __retry_connect__:         (optional) reconnect when the connection is lost, and retry while opening (default: true)
 *   - __connect_timeout__:       (optional) milliseconds open() waits for a connection before it fails (default: 30000);
 *                                with N failover servers each attempt gets a 1/N share
 *   - __reconnect_timeout__:     (optional) milliseconds before the first attempt after a loss; the wait doubles after each
 *                                failed attempt, and each wait is shortened at random by up to 25%; it starts over once a
 *                                connection stayed up for max_reconnect_timeout, at most 10 s (default: 1000)
 *   - __max_reconnect_timeout__: (optional) the longest wait between attempts, at least reconnect_timeout (default: 30000)
 *   - __keepalive_timeout__:     (optional) milliseconds of MQTT keepalive, sent rounded up to whole seconds; 0 turns it off
 *                                and with it the detection of a silently dead connection (default: 60000)
 *   - __clean_session__:         (optional) false: the broker keeps the subscriptions and queues QoS 1/2 messages while
 *                                disconnected; set a fixed client_id with it (default: true)
 *   - __max_offline_messages__:  (optional) how many publishes may wait for the broker while disconnected; beyond it
 *                                publish() rejects with `MQTT_OFFLINE_LIMIT`; with a persistent session it also bounds the
 *                                messages held for listeners not subscribed yet (default: 10000)
 *   - __protocol_version__:      (optional) 3 (MQTT 3.1), 4 (MQTT 3.1.1) or 5 (MQTT 5) (default: 4); the options
 *                                marked MQTT 5 are refused with an older version
 *   - __session_expiry__:        (optional, MQTT 5 only) seconds the broker keeps the session after a disconnect;
 *                                default: 0 with clean_session true, never (4294967295) with clean_session false.
 *                                With clean_session true and a session_expiry, open() starts a clean session and
 *                                reconnects resume it
 *   - __broker_assigns_client_id__: (optional, MQTT 5 only) send an empty client id and use the one the broker assigns,
 *                                also for reconnects; not with client_id (default: false)
 *   - __topic_alias_maximum__:   (optional, MQTT 5 only) topic aliases the broker may use towards us; above 0 our
 *                                publishes use aliases too, up to the broker's maximum (default: 0, off)
 *   - __ssl_reject_unauthorized__: (optional) refuse a broker whose certificate is not trusted or does not name its host
 *                                (default: true)
 *   - __ssl_server_name__:       (optional) the host name the broker's certificate must name, also sent as TLS SNI
 *                                (default: the host of each connection)
 *   - __max_qos__:               (optional) the highest QoS the broker supports (1 for NATS and RabbitMQ 3.x); publishes
 *                                and subscribes above it reject with `MQTT_QOS_NOT_SUPPORTED` before anything is sent
 *                                (default: 2). A broker's MQTT 5 CONNACK, or what it does with a QoS 2 publish, may
 *                                lower it further: see getStatus().maxQos
 *   - __will_topic__:            (optional) the last will: the topic the broker publishes will_message to when the
 *                                connection ends without DISCONNECT (not at close()); the other will keys need it
 *   - __will_message__:          (optional) the will's payload, UTF-8 text (default: empty)
 *   - __will_qos__:              (optional) the will's QoS (default: 0)
 *   - __will_retain__:           (optional) publish the will retained (default: false)
 *
 * The Go port's docs say 3000 for keepalive_timeout in one place and 60000 in another; this
 * port uses 60000.
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
 *
 * ### Health ###
 *
 * isOpen() says the component is open; isConnected() says the broker is reachable now;
 * getStatus() tells the state, attempts, last error and pending publishes; addStateListener()
 * reports each change. Each transition is logged once.
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
    private readonly _guard = new OpenCloseGuard(closedWhileOpening);
    private _displayUri = '';
    private readonly _state = new MqttStateTracker(() => this.getStatus(),
        (err) => this._logger.error(NO_CID, err, 'MQTT connection state listener failed'));
    /** The logger and counters as the parts see them: read at each use, since references change. */
    private readonly _reporting: MqttReporting = ((connection: MqttConnection): MqttReporting => ({
        get logger() { return connection._logger; },
        get counters() { return connection._counters; },
    }))(this);

    public constructor() {
        this._clientId = this._generatedClientId;
    }

    /** Retry option (`options.retry_connect`): the settings in use once open, before that the configured ones. */
    protected get _retryConnect(): boolean {
        return this.effectiveOptions().retryConnect;
    }

    /** Connection timeout in ms (`options.connect_timeout`). */
    protected get _connectTimeout(): number {
        return this.effectiveOptions().connectTimeout;
    }

    /** First reconnect wait in ms (`options.reconnect_timeout`). */
    protected get _reconnectTimeout(): number {
        return this.effectiveOptions().reconnectTimeout;
    }

    /** Keepalive in ms (`options.keepalive_timeout`). */
    protected get _keepAliveTimeout(): number {
        return this.effectiveOptions().keepAliveTimeout;
    }

    /** The `options.*` section of the configuration, with the defaults applied. */
    protected get _options(): ConfigParams {
        return this._config.setDefaults(this._defaultConfig).getSection('options');
    }

    /**
     * The settings open() read, or before that what it would read from the configuration alone
     * (no uri query, discovery or credential store); a configuration it would refuse shows the defaults.
     */
    private effectiveOptions(): MqttConnectionOptions {
        if (this._settings) return this._settings;
        const none = new ConfigParams();
        try {
            return readSettings(null, this._config, none, this._generatedClientId);
        } catch {
            return readSettings(null, none, none, this._generatedClientId);
        }
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
     * False when the connection asks the broker to keep its session (`options.clean_session`
     * false): subscriptions and queued QoS 1/2 messages then outlive disconnects and close().
     */
    public isCleanSession(): boolean {
        return this.effectiveOptions().cleanSession;
    }

    /**
     * True when the broker is reachable now. Unlike isOpen(), this turns false while the
     * connection is lost and reconnecting: use it (or getStatus()) for health checks.
     */
    public isConnected(): boolean {
        return this._open?.link.connected === true;
    }

    /** A snapshot of the connection's state and health (see [[MqttConnectionStatus]]). */
    public getStatus(): MqttConnectionStatus {
        const open = this._open;
        return {
            state: this._state.state,
            connected: open?.link.connected === true,
            since: this._state.since,
            reconnectAttempts: open?.link.attempts ?? 0,
            nextAttemptDelay: open?.link.nextAttemptDelay ?? null,
            reconnects: open?.link.reconnects ?? 0,
            lastError: open?.link.lastError ?? null,
            pendingPublishes: open?.publisher.pendingPublishes ?? 0,
            clientId: this._clientId,
            keepAlive: open ? open.link.client.keepalive : null,
            maxQos: open ? open.publisher.support.max : null,
        };
    }

    /**
     * Calls the listener with the new status at each change of state (opening, connected,
     * reconnecting, disconnected, closing, closed). A listener that throws is logged and kept.
     */
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

    private async doOpen(correlationId: string | null, signal: AbortSignal): Promise<void> {
        this._state.set('opening');
        try {
            await this.connect(correlationId, signal);
        } catch (err) {
            this._state.set('closed');
            throw err;
        }
        this._state.set('connected');
    }

    /** Reads the configuration into the settings, starts the link, and wires its parts (see MqttLink). */
    private async connect(correlationId: string | null, signal: AbortSignal): Promise<void> {
        let settings: MqttConnectionSettings;
        try {
            settings = await resolveSettings(correlationId, this._connectionResolver, this._config, this._generatedClientId);
        } catch (err) {
            // close() came while the configuration was read: that, not what failed since, is the answer.
            signal.throwIfAborted();
            throw err;
        }
        signal.throwIfAborted();
        this._settings = settings;
        this._clientId = settings.clientId;
        this._displayUri = settings.connection.displayUri;

        const dispatcher = new MqttDispatcher(this._subscriptions, this._reporting, this._displayUri, !settings.cleanSession,
            settings.maxOfflineMessages);
        let publisher: MqttPublisher | null = null;
        let link: MqttLink;
        try {
            link = await MqttLink.start(correlationId, settings, this._reporting, {
                message: (topic, payload, packet) => dispatcher.dispatch(topic, payload, packet),
                closed: () => publisher?.closed(),
                failed: (err) => publisher?.failAll(err),
                lost: (sessionKept) => {
                    this._subscriptions.lost(sessionKept);
                    this.linkChanged(false);
                },
                resumed: (sessionPresent) => {
                    this._subscriptions.resumed(sessionPresent);
                    this.linkChanged(true);
                },
            }, signal);
        } catch (err) {
            this._logger.error(cid(correlationId), err as Error, 'Failed to connect to MQTT broker at %s', this._displayUri);
            throw err;
        }
        publisher = new MqttPublisher(link, settings, this._reporting);
        this._subscriptions.attach(link, dispatcher);
        this._open = { settings, link, publisher, dispatcher };
        this._clientId = link.client.options.clientId ?? settings.clientId;
        this._logger.info(cid(correlationId), 'Connected to MQTT broker at %s as %s', this._displayUri, this._clientId);
        if (!settings.cleanSession && settings.clientId === this._generatedClientId) {
            this._logger.warn(cid(correlationId), 'options.clean_session is false but no client_id is configured: ' +
                'the broker keeps the session across reconnects, but a new process gets a new client id and a new session');
        }
    }

    /** The link went down or came back. */
    private linkChanged(connected: boolean): void {
        if (this._guard.closing) return;
        this._state.set(connected ? 'connected' : this._settings?.retryConnect === false ? 'disconnected' : 'reconnecting');
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
        this._subscriptions.detach();
        open.dispatcher.dropHeld();
        await open.link.end(correlationId);
        this._logger.info(cid(correlationId), 'Closed MQTT connection to %s', this._displayUri);
        this._state.set('closed');
    }

    /** MQTT has no queues to list: always an empty list. */
    public readQueueNames(): Promise<string[]> {
        return Promise.resolve([]);
    }

    /** MQTT creates topics on use: does nothing. */
    public createQueue(_name: string): Promise<void> {
        return Promise.resolve();
    }

    /** MQTT has no queues to delete: does nothing. */
    public deleteQueue(_name: string): Promise<void> {
        return Promise.resolve();
    }

    /**
     * Publishes a message. Resolves when MQTT.js has written it (QoS 0) or the broker has
     * acknowledged it (QoS 1 and 2). While the connection is down and `retry_connect` is on,
     * the message waits for the reconnect.
     *
     * @param topic   a topic name: no wildcards, not empty, at most 65535 bytes.
     * @param data    the payload, sent as is.
     * @param options (optional) QoS (default 0), retain, MQTT 5 properties; never modified.
     * @throws BadRequestException for bad input, InvalidStateException `MQTT_NOT_OPENED` or
     *   `MQTT_CLOSED`, ConnectionException `MQTT_NOT_CONNECTED` or `MQTT_PUBLISH_FAILED`,
     *   UnsupportedException `MQTT_QOS_NOT_SUPPORTED` (a QoS above what the broker takes) or
     *   `MQTT_FEATURE_NOT_SUPPORTED` (retain, when an MQTT 5 broker has no retained messages).
     */
    public publish(topic: string, data: Buffer | string, options?: IClientPublishOptions): Promise<void> {
        let open: MqttOpenConnection;
        let publishOptions: IClientPublishOptions;
        try {
            const topicError = checkTopicName(topic);
            if (topicError != null) {
                throw new BadRequestException(NO_CID, MqttErrorCode.InvalidTopic, `Invalid MQTT topic: ${topicError}`).withDetails('topic', topic);
            }
            checkPayload(topic, data);
            publishOptions = checkPublishOptions(topic, options);
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
     * @param topic     a topic filter (`+`, `#`, `$share/<group>/<filter>`).
     * @param options   (optional) QoS (default 0) and MQTT 5 subscribe flags (nl, rap, rh, properties), which
     *                  all listeners of one filter must share; never modified.
     * @param listener  the listener; subscribing the same listener again to the same filter does nothing.
     * @throws BadRequestException for bad input, InvalidStateException `MQTT_NOT_OPENED` or `MQTT_CLOSED`,
     *   ConnectionException `MQTT_SUBSCRIBE_REJECTED` (SUBACK failure, details.reason_code), `MQTT_QOS_NOT_GRANTED`
     *   (the SUBACK granted a lower QoS) or `MQTT_NOT_CONNECTED`, UnsupportedException `MQTT_QOS_NOT_SUPPORTED` or
     *   `MQTT_FEATURE_NOT_SUPPORTED` (what an MQTT 5 broker's CONNACK says it lacks).
     */
    public async subscribe(topic: string, options: IClientSubscribeOptions | null, listener: IMqttMessageListener): Promise<void> {
        const parsed = parseFilter(topic);
        if (typeof parsed === 'string') {
            throw new BadRequestException(NO_CID, MqttErrorCode.InvalidFilter, `Invalid MQTT topic filter: ${parsed}`).withDetails('topic', topic);
        }
        const subscribeOptions = checkSubscribeOptions(topic, options);
        checkListener(topic, listener);
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
    private checkOpen(): MqttOpenConnection {
        if (this._open == null) {
            throw new InvalidStateException(NO_CID, MqttErrorCode.NotOpened, 'MQTT connection is not open');
        }
        return this._open;
    }
}

function closedWhileOpening(correlationId: string | null): InvalidStateException {
    return new InvalidStateException(cid(correlationId), MqttErrorCode.Closed, 'MQTT connection was closed while opening');
}
