import { connect, type IClientOptions, type IClientPublishOptions, type IClientSubscribeOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt';
import {
    ApplicationException, BadRequestException, ConfigParams, ConnectionException, InvalidStateException,
    type IConfigurable, type IOpenable, type IReferenceable, type IReferences, type IUnreferenceable,
} from 'pip-services3-commons-nodex';
import { CompositeCounters, CompositeLogger } from 'pip-services3-components-nodex';
import type { IMessageQueueConnection } from 'pip-services3-messaging-nodex';

import type { IMqttMessageListener } from './IMqttMessageListener';
import { MqttConnectionResolver } from './MqttConnectionResolver';
import { MQTT_CONNECTION_DEFAULTS, makeClientId, readSettings, toClientOptions, type MqttConnectionSettings } from './MqttConnectionSettings';
import { MqttErrorCode } from './MqttErrorCode';
import type { MqttSubscription } from './MqttSubscription';
import { type MqttFilterEntry, MqttSubscriptions } from './MqttSubscriptions';
import { checkTopicName, parseFilter } from './MqttTopics';
import { waitForConnack } from './waitForConnack';
import { checkPayload, checkPublishOptions, checkSubscribeOptions, checkListener } from './MqttInputs';
import { endClient } from './endClient';
import { cid, NO_CID } from './correlation';

/**
 * One MQTT broker connection shared by many subscribers and queues, on MQTT.js.
 *
 * Topic filters are real MQTT filters: `+` matches one level, `#` the rest (and the parent),
 * a leading wildcard does not match `$` topics, and `$share/<group>/<filter>` is a shared
 * subscription. Each filter is subscribed at the broker once, at the highest QoS asked, however
 * many listeners share it, and unsubscribed when its last listener leaves.
 *
 * ### Configuration parameters ###
 *
 * - __client_id__:               (optional) MQTT client id; default: unique per connection (host name and random hex)
 * - __connection(s)__:           one broker (`connection.*`) or several for failover (`connections.N.*`)
 *   - __discovery_key__:         (optional) key to resolve the connection in an IDiscovery
 *   - __uri__:                   (optional) `mqtt://[user[:password]@]host[:port][?client_id=...&connect_timeout=...]`
 *   - __protocol__:              (optional) mqtt (default), mqtts, ws, wss; aliases tcp = mqtt, ssl and tls = mqtts
 *   - __host__:                  host name or IP address (required unless in the uri)
 *   - __port__:                  (optional) port; default by protocol: 1883, 8883, 80, 443
 *   - __path__:                  (optional) WebSocket path for ws and wss (default: /mqtt)
 * - __credential(s)__:
 *   - __store_key__:             (optional) key to look the credential up in an ICredentialStore
 *   - __username__:              (optional) user name
 *   - __password__:              (optional) password
 * - __options__:
 *   - __retry_connect__:         (optional) reconnect when the connection is lost, and retry while opening (default: true)
 *   - __connect_timeout__:       (optional) milliseconds open() waits for a connection before it fails (default: 30000)
 *   - __reconnect_timeout__:     (optional) milliseconds between connection attempts (default: 1000)
 *   - __keepalive_timeout__:     (optional) milliseconds of MQTT keepalive, sent rounded up to whole seconds; 0 turns it off (default: 60000)
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
    /** The configuration as given (without defaults), read again at open. */
    protected _config: ConfigParams = new ConfigParams();
    /** The `options.*` section with defaults applied. */
    protected _options: ConfigParams = MQTT_CONNECTION_DEFAULTS.getSection('options');
    /** The MQTT.js client, while open. */
    protected _connection: MqttClient | null = null;
    /** The client id: configured, or unique to this connection. */
    protected _clientId: string;
    protected _retryConnect = true;
    protected _connectTimeout = 30000;
    protected _reconnectTimeout = 1000;
    protected _keepAliveTimeout = 60000;
    /** The subscriptions, by filter, with the router that dispatches incoming messages. */
    protected _subscriptions: MqttSubscriptions = new MqttSubscriptions();

    private readonly _generatedClientId = makeClientId();
    private _opening: Promise<void> | null = null;
    private _closing: Promise<void> | null = null;
    private _abortOpen: ((err: Error) => void) | null = null;
    /** Set by a close() that came while open() was still resolving the configuration. */
    private _pendingAbort: Error | null = null;
    /** Rejected at close: pending publishes and subscribes race against it. */
    private _closed: { promise: Promise<never>; reject: (err: Error) => void } | null = null;
    private _displayUri = '';
    private _connected = false;
    private _lastError: string | null = null;

    public constructor() {
        this._clientId = this._generatedClientId;
    }

    /**
     * Configures the component. Values are checked at open(), which raises ConfigException.
     * @param config configuration parameters, see the class description.
     */
    public configure(config: ConfigParams): void {
        this._config = config;
        const merged = config.setDefaults(this._defaultConfig);
        this._connectionResolver.configure(merged);
        this._options = merged.getSection('options');
        this._clientId = nonEmpty(config.getAsNullableString('client_id')) ?? this._generatedClientId;
        this._retryConnect = this._options.getAsBooleanWithDefault('retry_connect', this._retryConnect);
        this._connectTimeout = this._options.getAsIntegerWithDefault('connect_timeout', this._connectTimeout);
        this._reconnectTimeout = this._options.getAsIntegerWithDefault('reconnect_timeout', this._reconnectTimeout);
        this._keepAliveTimeout = this._options.getAsIntegerWithDefault('keepalive_timeout', this._keepAliveTimeout);
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
        return this._connection != null && this._opening == null;
    }

    /** The MQTT.js client while open, otherwise null. */
    public getConnection(): MqttClient | null {
        return this.isOpen() ? this._connection : null;
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
     *   `MQTT_CONNECT_TIMEOUT` or `MQTT_CONNECT_REFUSED`; InvalidStateException `MQTT_CLOSED`
     *   when close() is called meanwhile.
     */
    public async open(correlationId: string | null): Promise<void> {
        if (this._closing) await this._closing.catch(() => undefined);
        if (this._opening) return this._opening;
        if (this._connection) return;
        const opening = this.doOpen(correlationId);
        this._opening = opening;
        try {
            await opening;
        } finally {
            if (this._opening === opening) this._opening = null;
        }
    }

    private async doOpen(correlationId: string | null): Promise<void> {
        this._pendingAbort = null;
        const resolved = await this._connectionResolver.resolve(correlationId);
        // close() may have run while resolve() was awaited (TypeScript cannot see that).
        const aborted = this._pendingAbort as Error | null;
        if (aborted) throw aborted;
        const settings = readSettings(correlationId, this._config, resolved.uriOptions, this._generatedClientId);
        this.applySettings(settings);
        this._displayUri = resolved.displayUri;
        const options = toClientOptions(settings, resolved);

        const client = connect(options);
        this._connection = client;
        this._lastError = null;
        const closed = deferredRejection();
        this._closed = closed;
        try {
            await waitForConnack(client, {
                correlationId,
                displayUri: this._displayUri,
                connectTimeout: settings.connectTimeout,
                retry: settings.retryConnect,
                onAbort: (abort) => { this._abortOpen = abort; },
            });
        } catch (err) {
            this._abortOpen = null;
            this._connection = null;
            this._closed = null;
            closed.reject(err as Error);
            await endClient(client, false);
            this._logger.error(cid(correlationId), err as Error, 'Failed to connect to MQTT broker at %s', this._displayUri);
            throw err;
        }
        this._abortOpen = null;
        this._connected = true;
        this.attachHandlers(client, settings);
        this._logger.info(cid(correlationId), 'Connected to MQTT broker at %s as %s', this._displayUri, settings.clientId);
    }

    private applySettings(settings: MqttConnectionSettings): void {
        this._clientId = settings.clientId;
        this._retryConnect = settings.retryConnect;
        this._connectTimeout = settings.connectTimeout;
        this._reconnectTimeout = settings.reconnectTimeout;
        this._keepAliveTimeout = settings.keepAliveTimeout;
    }

    private attachHandlers(client: MqttClient, settings: MqttConnectionSettings): void {
        client.on('message', (topic, payload, packet) => this.dispatch(topic, payload, packet));
        client.on('connect', (connack) => this.onReconnected(client, connack));
        client.on('reconnect', () => {
            this._logger.debug(NO_CID, 'Reconnecting to MQTT broker at %s', this._displayUri);
        });
        client.on('close', () => {
            if (!this._connected || client !== this._connection) return;
            this._connected = false;
            if (settings.retryConnect) {
                this._logger.warn(NO_CID, 'Connection to MQTT broker at %s lost; reconnecting every %d ms',
                    this._displayUri, settings.reconnectTimeout);
            } else {
                this._logger.warn(NO_CID, 'Connection to MQTT broker at %s lost; not reconnecting because options.retry_connect is false',
                    this._displayUri);
            }
        });
        client.on('error', (err) => {
            // Reconnect attempts repeat the same error: log each distinct one once per outage.
            if (err.message === this._lastError) return;
            this._lastError = err.message;
            this._logger.error(NO_CID, err, 'MQTT connection error at %s', this._displayUri);
        });
        client.on('disconnect', (packet) => {
            this._logger.warn(NO_CID, 'MQTT broker at %s sent DISCONNECT (reason code %s)', this._displayUri, packet.reasonCode ?? 0);
        });
    }

    private onReconnected(client: MqttClient, connack: IConnackPacket): void {
        if (client !== this._connection) return;
        this._connected = true;
        this._lastError = null;
        this._logger.info(NO_CID, 'Reconnected to MQTT broker at %s', this._displayUri);
        if (connack.sessionPresent || this._subscriptions.filterCount === 0) return;
        // No session on the broker: subscribe every filter again.
        const batch: Record<string, IClientSubscribeOptions> = {};
        for (const entry of this._subscriptions.entries()) batch[entry.parsed.brokerFilter] = entry.brokerOptions();
        client.subscribeAsync(batch).then((granted) => {
            for (const g of granted) {
                if ((g.qos & 0x80) !== 0) {
                    this._logger.error(NO_CID, null as unknown as Error, 'MQTT broker rejected the resubscription to %s (reason code %d)', g.topic, g.qos);
                }
            }
        }, (err: Error) => {
            this._logger.error(NO_CID, err, 'Failed to resubscribe after reconnecting to %s', this._displayUri);
        });
    }

    private dispatch(topic: string, payload: Buffer, packet: IPublishPacket): void {
        this._counters.incrementOne('mqtt.received_messages');
        const listeners = this._subscriptions.match(topic);
        for (const listener of listeners) {
            try {
                const result = listener.onMessage(topic, payload, packet);
                if (result != null && typeof result.then === 'function') {
                    result.then(undefined, (err: unknown) => this.listenerFailed(topic, err));
                }
            } catch (err) {
                this.listenerFailed(topic, err);
            }
        }
    }

    private listenerFailed(topic: string, err: unknown): void {
        const error = err instanceof Error ? err : new Error(String(err));
        this._logger.error(NO_CID, error, 'MQTT message listener failed on topic %s', topic);
    }

    /**
     * Closes the connection: sends DISCONNECT when connected, waits for the client to end and
     * drops all subscriptions. Idempotent; concurrent calls share one close. Pending publishes
     * and subscribes reject with InvalidStateException `MQTT_CLOSED`.
     */
    public async close(correlationId: string | null): Promise<void> {
        if (this._closing) return this._closing;
        const closing = this.doClose(correlationId);
        this._closing = closing;
        try {
            await closing;
        } finally {
            this._closing = null;
        }
    }

    private async doClose(correlationId: string | null): Promise<void> {
        if (this._opening) {
            const abort = new InvalidStateException(cid(correlationId), MqttErrorCode.Closed, 'MQTT connection was closed while opening');
            if (this._abortOpen) this._abortOpen(abort);
            else this._pendingAbort = abort;
            await this._opening.catch(() => undefined);
        }
        const client = this._connection;
        if (!client) return;
        this._connection = null;
        this._connected = false;
        this._subscriptions.clear();
        const closed = this._closed;
        this._closed = null;
        await endClient(client, true);
        closed?.reject(new InvalidStateException(cid(correlationId), MqttErrorCode.Closed, 'MQTT connection was closed'));
        this._logger.info(cid(correlationId), 'Closed MQTT connection to %s', this._displayUri);
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
     * @throws BadRequestException for bad input, InvalidStateException `MQTT_NOT_OPENED`,
     *   ConnectionException `MQTT_NOT_CONNECTED` or `MQTT_PUBLISH_FAILED`.
     */
    public async publish(topic: string, data: Buffer | string, options?: IClientPublishOptions): Promise<void> {
        const topicError = checkTopicName(topic);
        if (topicError != null) {
            throw new BadRequestException(NO_CID, MqttErrorCode.InvalidTopic, `Invalid MQTT topic: ${topicError}`).withDetails('topic', topic);
        }
        checkPayload(topic, data);
        const publishOptions = checkPublishOptions(topic, options);
        const client = this.checkConnected();
        const timing = this._counters.beginTiming('mqtt.publish_time');
        try {
            await this.raceClose(client.publishAsync(topic, data, publishOptions));
        } catch (err) {
            throw this.wrap(err, MqttErrorCode.PublishFailed, `Failed to publish to MQTT topic ${topic}`, topic);
        } finally {
            timing.endTiming();
        }
        this._counters.incrementOne('mqtt.published_messages');
    }

    /**
     * Subscribes a listener to a topic filter. Resolves after the broker's SUBACK (or at once
     * when the filter is already subscribed at this QoS or higher).
     *
     * @param topic     a topic filter (`+`, `#`, `$share/<group>/<filter>`).
     * @param options   (optional) QoS (default 0) and MQTT 5 subscribe flags; never modified.
     * @param listener  the listener; subscribing the same listener again does nothing.
     * @throws BadRequestException for bad input, InvalidStateException `MQTT_NOT_OPENED`,
     *   ConnectionException `MQTT_SUBSCRIBE_REJECTED` (SUBACK failure, details.reason_code).
     */
    public async subscribe(topic: string, options: IClientSubscribeOptions | null, listener: IMqttMessageListener): Promise<void> {
        const parsed = parseFilter(topic);
        if (typeof parsed === 'string') {
            throw new BadRequestException(NO_CID, MqttErrorCode.InvalidFilter, `Invalid MQTT topic filter: ${parsed}`).withDetails('topic', topic);
        }
        const subscribeOptions = checkSubscribeOptions(topic, options);
        checkListener(topic, listener);
        const client = this.checkConnected();

        const { entry, added } = this._subscriptions.add(parsed, subscribeOptions, listener);
        let pending = entry.pending;
        if (added && (pending == null && entry.registrations.size === 1 || subscribeOptions.qos > entry.brokerQos)) {
            pending = this.sendSubscribe(client, entry);
        }
        if (pending == null) return;
        try {
            await this.raceClose(pending);
        } catch (err) {
            if (added) this._subscriptions.remove(topic, listener);
            throw err;
        }
    }

    private sendSubscribe(client: MqttClient, entry: MqttFilterEntry): Promise<void> {
        const options = entry.brokerOptions();
        const previousQos = entry.brokerQos;
        entry.brokerQos = options.qos;
        const topic = entry.parsed.brokerFilter;
        const pending = client.subscribeAsync(topic, options).then((granted) => {
            const code = granted[0]?.qos ?? 0;
            if ((code & 0x80) !== 0) {
                throw new ConnectionException(NO_CID, MqttErrorCode.SubscribeRejected,
                    `MQTT broker rejected the subscription to ${topic} (reason code ${code})`)
                    .withDetails('topic', topic).withDetails('reason_code', code);
            }
        }).catch((err: unknown) => {
            entry.brokerQos = previousQos;
            throw this.wrap(err, MqttErrorCode.SubscribeRejected, `Failed to subscribe to MQTT topic ${topic}`, topic);
        }).finally(() => {
            if (entry.pending === pending) entry.pending = null;
        });
        entry.pending = pending;
        // Every caller awaits it; this handler only keeps an unobserved failure from crashing.
        pending.catch(() => undefined);
        return pending;
    }

    /**
     * Removes a listener from a topic filter. When it was the filter's last listener, the
     * broker subscription is dropped (UNSUBSCRIBE, awaited). Unknown pairs are ignored.
     */
    public async unsubscribe(topic: string, listener: IMqttMessageListener): Promise<void> {
        const gone = this._subscriptions.remove(topic, listener);
        const client = this._connection;
        // A clean session that is down for good has no subscriptions at the broker to drop.
        if (!gone || client == null || this._opening != null || (!client.connected && !this._retryConnect)) return;
        try {
            const packet = await this.raceClose(client.unsubscribeAsync(topic));
            const codes = (packet as { reasonCode?: number | number[] } | undefined)?.reasonCode;
            const failed = (Array.isArray(codes) ? codes : [codes ?? 0]).find((c) => (c & 0x80) !== 0);
            if (failed !== undefined) {
                throw new ConnectionException(NO_CID, MqttErrorCode.UnsubscribeFailed,
                    `MQTT broker rejected the unsubscription from ${topic} (reason code ${failed})`)
                    .withDetails('topic', topic).withDetails('reason_code', failed);
            }
        } catch (err) {
            throw this.wrap(err, MqttErrorCode.UnsubscribeFailed, `Failed to unsubscribe from MQTT topic ${topic}`, topic);
        }
    }

    /**
     * Checks that the connection is open.
     * @throws InvalidStateException `MQTT_NOT_OPENED`.
     */
    protected checkOpen(): MqttClient {
        const client = this.getConnection();
        if (client == null) {
            throw new InvalidStateException(NO_CID, MqttErrorCode.NotOpened, 'MQTT connection is not open');
        }
        return client;
    }

    private checkConnected(): MqttClient {
        const client = this.checkOpen();
        if (!client.connected && !this._retryConnect) {
            throw new ConnectionException(NO_CID, MqttErrorCode.NotConnected,
                `MQTT connection to ${this._displayUri} is down and options.retry_connect is false`);
        }
        return client;
    }

    private raceClose<T>(promise: Promise<T>): Promise<T> {
        const closed = this._closed;
        return closed ? Promise.race([promise, closed.promise]) : promise;
    }

    private wrap(err: unknown, code: string, message: string, topic: string): ApplicationException {
        if (err instanceof ApplicationException) return err;
        const cause = err instanceof Error ? err : new Error(String(err));
        const wrapped = new ConnectionException(NO_CID, code, `${message}: ${cause.message}`).withCause(cause).withDetails('topic', topic);
        const reasonCode = reasonCodeOf(cause);
        if (reasonCode !== undefined) wrapped.withDetails('reason_code', reasonCode);
        return wrapped;
    }
}

/**
 * The MQTT reason code an MQTT.js error carries: its numeric `code`, or the failure code in
 * the acknowledgement packet attached to it (SUBACK `granted`, UNSUBACK or PUBACK `reasonCode`).
 */
function reasonCodeOf(err: Error): number | undefined {
    const { code, packet } = err as { code?: unknown; packet?: { granted?: unknown; reasonCode?: unknown } };
    if (typeof code === 'number') return code;
    const codes = packet?.granted ?? packet?.reasonCode;
    const list: unknown[] = Array.isArray(codes) ? codes : [codes];
    return list.find((c): c is number => typeof c === 'number' && (c & 0x80) !== 0);
}

function deferredRejection(): { promise: Promise<never>; reject: (err: Error) => void } {
    let reject!: (err: Error) => void;
    const promise = new Promise<never>((_resolve, r) => { reject = r; });
    promise.catch(() => undefined);
    return { promise, reject };
}

function nonEmpty(value: string | null): string | null {
    return value == null || value === '' ? null : value;
}

// Re-exported for the option types used in signatures above.
export type { IClientOptions };
