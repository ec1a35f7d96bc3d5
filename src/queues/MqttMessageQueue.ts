import type { IPublishPacket, MqttClient } from 'mqtt';
import {
    BadRequestException, ConfigException, ConfigParams, DependencyResolver, Descriptor, InvalidStateException, References,
    type ICleanable, type IOpenable, type IReferences, type IUnreferenceable,
} from 'pip-services3-commons-nodex';
import { MessageEnvelope, MessageQueue, MessagingCapabilities, type IMessageReceiver } from 'pip-services3-messaging-nodex';

import { NO_CID, cid } from '../connect/correlation';
import type { IMqttMessageListener } from '../connect/IMqttMessageListener';
import { MqttConnection } from '../connect/MqttConnection';
import { MqttErrorCode } from '../connect/MqttErrorCode';
import { SharedRun } from '../connect/SharedRun';
import { decodeEnvelope, encodeEnvelope } from './MqttEnvelopeCodec';
import { MqttMessageBuffer } from './MqttMessageBuffer';
import { MQTT_QUEUE_DEFAULTS, readQueueSettings, type MqttQueueSettings } from './MqttQueueSettings';

/** The pip-services typings say MessageEnvelope where null is returned (no message). */
const NO_MESSAGE = null as unknown as MessageEnvelope;

/** The connection a queue looks for in its references, unless `dependencies.connection` says otherwise. */
const CONNECTION_LOCATOR = new Descriptor('*', 'connection', 'mqtt', '*', '1.0');

/**
 * A Pip.Services message queue over MQTT: messages sent are published to one topic, and the
 * messages of that topic are buffered in memory for receive(), peek() and listen().
 *
 * The queue uses the MqttConnection found in its references (shared with other queues and
 * components, opened if needed, never closed by the queue). Only when none is referenced does it
 * create, own, open and close a connection of its own, configured with the queue's
 * configuration (all MqttConnection keys apply).
 *
 * The queue subscribes once: at open() with `options.autosubscribe`, otherwise at the first
 * peek(), peekBatch(), receive() or listen(). close() unsubscribes (and waits for the broker).
 * When the owner of a shared connection closes it, the subscription goes with it: isOpen() turns
 * false, and open() subscribes again.
 *
 * MQTT acknowledges a message when it arrives, so complete(), abandon(), renewLock() and
 * moveToDeadLetter() do nothing, and the capabilities say so. A message buffered here and not
 * yet received is lost if the process stops.
 *
 * ### Configuration parameters ###
 *
 * - __name__ / __queue__:          (optional) the queue name; default: the descriptor's name
 * - __topic__:                     (optional) the MQTT topic to publish to and subscribe to; default: the queue name.
 *                                  A topic with wildcards (`+`, `#`) can receive but not send.
 * - __options__:
 *   - __serialize_envelope__:      (optional) true to send the whole envelope as JSON (interoperable with the other
 *                                  Pip.Services ports), false to send only the message bytes (default: false)
 *   - __autosubscribe__:           (optional) true to subscribe at open() (default: false)
 *   - __qos__:                     (optional) QoS to publish and subscribe with: 0, 1 or 2 (default: 0)
 *   - __retain__:                  (optional) publish retained messages (default: false)
 *   - __group__:                   (optional) consume as a member of this shared-subscription group
 *                                  (`$share/<group>/<topic>`): each message goes to one member (default: none)
 *   - __max_buffered__:            (optional) the most messages kept in memory; beyond it incoming messages are
 *                                  dropped, logged and counted (default: 10000)
 * - __dependencies__:
 *   - __connection__:              (optional) the descriptor of the connection to use (default: `*:connection:mqtt:*:1.0`)
 * - all [[MqttConnection]] keys (`client_id`, `connection(s)`, `credential(s)`, `options.*`) for a connection of its own
 *
 * ### References ###
 *
 * - `*:logger:*:*:1.0`             (optional) ILogger components to pass log messages
 * - `*:counters:*:*:1.0`           (optional) ICounters components to pass collected measurements
 * - `*:connection:mqtt:*:1.0`      (optional) a shared MqttConnection; without one the queue makes its own
 * - `*:discovery:*:*:1.0`, `*:credential-store:*:*:1.0`  (optional) for a connection of its own
 *
 * ### Counters ###
 *
 * `queue.<name>.sent_messages`, `queue.<name>.received_messages` (accepted into the queue),
 * `queue.<name>.dropped_messages` (buffer full), `queue.<name>.malformed_messages` (bad envelope JSON).
 *
 * ### Example ###
 *
 *     const queue = new MqttMessageQueue('orders');
 *     queue.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://localhost:1883', 'options.qos', 1));
 *     await queue.open('123');
 *     await queue.send('123', new MessageEnvelope('123', 'order.created', '{"id":1}'));
 *     const message = await queue.receive('123', 10000);   // null after 10 s without a message
 *     await queue.close('123');
 */
export class MqttMessageQueue extends MessageQueue implements IUnreferenceable, IOpenable, ICleanable {
    /** The default configuration of the queue's own options. */
    public static readonly defaultConfig: ConfigParams = MQTT_QUEUE_DEFAULTS;

    private _config: ConfigParams = new ConfigParams();
    private _references: IReferences | null = null;
    private _dependencyResolver = MqttMessageQueue.newDependencyResolver();
    /** The connection found in the references: shared, never closed here. */
    private _sharedConnection: MqttConnection | null = null;
    /** The connection this queue made because none was referenced: owned. */
    private _localConnection: MqttConnection | null = null;
    /** The connection in use while open. */
    private _connection: MqttConnection | null = null;
    private _settings: MqttQueueSettings | null = null;
    private _opened = false;
    /** The connection's client when the queue opened: another client means it was closed and reopened. */
    private _openedOn: MqttClient | null = null;
    private readonly _opening = new SharedRun();
    private readonly _closing = new SharedRun();
    /** Ends the wait of an open() for its connection; set while it waits. */
    private _abortOpen: ((err: Error) => void) | null = null;
    /** Incremented by close(): an open() or receive() that sees it change was closed meanwhile. */
    private _generation = 0;
    /** Counts close() calls: an open() queued behind a close() fails when another close() came meanwhile. */
    private _closeCalls = 0;
    /** The delivery in progress to each receiver, so that a new drain for it waits for it. */
    private readonly _delivering = new Map<IMessageReceiver, Promise<unknown>>();

    private readonly _buffer: MqttMessageBuffer = new MqttMessageBuffer(10000);
    private readonly _listener: IMqttMessageListener = {
        onMessage: (topic, data, packet) => this.onMessage(topic, data, packet),
    };
    /** The subscription in flight or made, and the client it was made on. */
    private _subscribing: Promise<void> | null = null;
    private _subscribedOn: MqttClient | null = null;
    private _receiver: IMessageReceiver | null = null;
    /** Changed by listen(), endListen() and close(): a drain or a beginListen() of an older epoch stops. */
    private _listenEpoch = 0;
    /** The epoch of the drain running, or -1. */
    private _drainingEpoch = -1;
    /** Messages dropped since the buffer last had room; > 0 while dropping. */
    private _dropping = 0;

    /** @param name (optional) the queue name; also the default topic. */
    public constructor(name?: string) {
        super(name, new MessagingCapabilities(true, true, true, true, true, false, false, false, true));
    }

    private static newDependencyResolver(): DependencyResolver {
        const resolver = new DependencyResolver();
        resolver.put('connection', CONNECTION_LOCATOR);
        return resolver;
    }

    /** Configures the queue; values are checked at open(), which raises ConfigException. */
    public override configure(config: ConfigParams): void {
        super.configure(config);
        this._config = config;
        this._dependencyResolver.configure(config);
    }

    /**
     * Sets references: logger, counters, and the MqttConnection to share.
     * @throws ConfigException `MQTT_BAD_REFERENCE` when the component found as the connection is not an MqttConnection.
     */
    public override setReferences(references: IReferences): void {
        super.setReferences(references);
        this._references = references;
        this._dependencyResolver.setReferences(references);
        const found = this._dependencyResolver.getOneOptional<unknown>('connection');
        if (found != null && !isMqttConnection(found)) {
            throw new ConfigException(NO_CID, MqttErrorCode.BadReference,
                `The connection referenced by MQTT queue ${this.getName()} is not an MqttConnection`);
        }
        this._sharedConnection = found ?? null;
    }

    /** Forgets the references; a shared connection in use stays in use until close(). */
    public unsetReferences(): void {
        this._references = null;
        this._sharedConnection = null;
        this._dependencyResolver = MqttMessageQueue.newDependencyResolver();
        this._dependencyResolver.configure(this._config);
    }

    /**
     * True between open() and close() while the connection it opened on is still open. When a
     * shared connection is closed (and perhaps reopened) by its owner, the queue's subscription
     * went with it: the queue reports closed until open() is called again.
     */
    public isOpen(): boolean {
        return this._opened && this._openedOn != null && this._connection?.getConnection() === this._openedOn;
    }

    /**
     * Opens the queue: opens the connection if it is not open (a local one, or the shared one),
     * and subscribes when `options.autosubscribe` is set. Idempotent; concurrent calls share one.
     *
     * @throws ConfigException for bad configuration, the connection's errors, InvalidStateException
     *   `MQTT_CLOSED` when close() is called meanwhile.
     */
    public override async open(correlationId: string | null): Promise<void> {
        if (this._closing.current) {
            const closes = this._closeCalls;
            await this._closing.settled();
            if (this._closeCalls !== closes) {
                throw new InvalidStateException(cid(correlationId), MqttErrorCode.Closed, `MQTT queue ${this.getName()} was closed while opening`);
            }
        }
        if (this.isOpen() && !this._opening.current) return;
        return this._opening.run(() => this.doOpen(correlationId));
    }

    private async doOpen(correlationId: string | null): Promise<void> {
        const generation = this._generation;
        const settings = readQueueSettings(correlationId, this._config, this.getName());
        if (this.getName() == null || this.getName() === '') this._name = settings.topic;
        this._settings = settings;
        this._buffer.limit = settings.maxBuffered;

        const connection = this._sharedConnection ?? this.localConnection();
        this._connection = connection;
        // close() ends this wait at once: a shared connection goes on opening for its owner.
        const aborted = new Promise<never>((_resolve, reject) => { this._abortOpen = reject; });
        try {
            await Promise.race([connection.open(correlationId), aborted]);
        } finally {
            this._abortOpen = null;
        }
        const checkClosed = (): void => {
            if (this._generation !== generation) {
                throw new InvalidStateException(cid(correlationId), MqttErrorCode.Closed, `MQTT queue ${this.getName()} was closed while opening`);
            }
        };
        checkClosed();
        this._opened = true;
        this._openedOn = connection.getConnection();
        if (settings.autosubscribe || this._receiver) {
            try {
                await this.subscribeOnce(correlationId);
                checkClosed();
            } catch (err) {
                if (this._generation === generation) {
                    this._opened = false;
                    this._openedOn = null;
                    if (connection === this._localConnection) await connection.close(correlationId);
                }
                throw err;
            }
        }
        this._logger.debug(cid(correlationId), 'Opened MQTT queue %s on topic %s', this.getName(), settings.topic);
    }

    private localConnection(): MqttConnection {
        this._localConnection ??= new MqttConnection();
        // Closed by close(), so each open() applies the latest configuration and references.
        if (!this._localConnection.isOpen()) {
            this._localConnection.configure(this._config);
            // configure() and setReferences() append (credentials, loggers, counters): start from fresh ones.
            this._localConnection.unsetReferences();
            this._localConnection.setReferences(this._references ?? new References());
        }
        return this._localConnection;
    }

    /**
     * Closes the queue: pending receive() calls resolve null, listening ends, the subscription is
     * dropped (awaited), and a connection of its own is closed; a shared one stays open. Messages
     * already buffered stay for after a reopen (clear() drops them). Idempotent.
     */
    public async close(correlationId: string | null): Promise<void> {
        this._closeCalls++;
        return this._closing.run(() => this.doClose(correlationId));
    }

    private async doClose(correlationId: string | null): Promise<void> {
        this._generation++;
        this._abortOpen?.(new InvalidStateException(cid(correlationId), MqttErrorCode.Closed, `MQTT queue ${this.getName()} was closed while opening`));
        const connection = this._connection;
        const owned = connection != null && connection === this._localConnection;
        const wasOpen = this._opened;
        // From here on nothing is handed to a receiver or a waiting receive().
        this._opened = false;
        this._openedOn = null;
        this._receiver = null;
        this._listenEpoch++;
        this._buffer.releaseWaiters();
        // A local connection's close() also ends an open() in flight.
        const opening = this._opening.current;
        if (opening && owned) await connection.close(correlationId);
        // Removing the listener first also settles a subscribe() still waiting for it (a reconnect
        // may be far away), including the one of an open() in flight, which then fails with MQTT_CLOSED.
        const subscribed = this._subscribing;
        this._subscribing = null;
        this._subscribedOn = null;
        const unsubscribing = connection && subscribed
            ? connection.unsubscribe(this._settings!.filter, this._listener)
            : Promise.resolve();
        unsubscribing.catch(() => undefined);
        await this._opening.settled();
        try {
            await unsubscribing;
        } catch (err) {
            this._logger.warn(cid(correlationId), 'MQTT queue %s could not unsubscribe from %s: %s',
                this.getName(), this._settings!.filter, (err as Error).message);
        }
        await subscribed?.catch(() => undefined);
        if (owned) await connection.close(correlationId);
        this._connection = null;
        if (wasOpen) this._logger.debug(cid(correlationId), 'Closed MQTT queue %s', this.getName());
    }

    /** Throws InvalidStateException `MQTT_NOT_OPENED` unless the queue is open. */
    protected override checkOpen(correlationId: string | null): void {
        this.openConnection(correlationId);
    }

    private openConnection(correlationId: string | null): MqttConnection {
        if (!this.isOpen()) {
            throw new InvalidStateException(cid(correlationId), MqttErrorCode.NotOpened, `MQTT queue ${this.getName()} is not open`);
        }
        return this._connection!;
    }

    /** Subscribes the queue at the broker, once per open connection; concurrent calls share it. */
    private subscribeOnce(correlationId: string | null): Promise<void> {
        const connection = this.openConnection(correlationId);
        const client = connection.getConnection();
        if (this._subscribing && this._subscribedOn === client) return this._subscribing;
        const settings = this._settings!;
        const subscribing = connection.subscribe(settings.filter, { qos: settings.qos }, this._listener);
        this._subscribing = subscribing;
        this._subscribedOn = client;
        void subscribing.then(
            () => this._logger.debug(cid(correlationId), 'MQTT queue %s subscribed to %s', this.getName(), settings.filter),
            () => {
                if (this._subscribing !== subscribing) return;
                this._subscribing = null;
                this._subscribedOn = null;
            },
        );
        return subscribing;
    }

    private peekFirst(correlationId: string | null, count: number): Promise<MessageEnvelope[]> {
        try {
            this.startSubscription(correlationId);
        } catch (err) {
            return Promise.reject(err instanceof Error ? err : new Error(String(err)));
        }
        return Promise.resolve(this._buffer.peek(count));
    }

    /** Subscribes if not yet subscribed, without waiting; a failure is logged. @throws `MQTT_NOT_OPENED`. */
    private startSubscription(correlationId: string | null): void {
        this.subscribeOnce(correlationId).catch((err: unknown) => {
            this._logger.error(cid(correlationId), err as Error, 'MQTT queue %s cannot subscribe to %s',
                this.getName(), this._settings?.filter ?? '');
        });
    }

    private counter(name: string): string {
        return `queue.${this.getName()}.${name}`;
    }

    private onMessage(topic: string, data: Buffer, packet: IPublishPacket): void {
        // Until close() has removed the listener, a message is kept (MQTT.js has acknowledged it).
        const settings = this._settings;
        if (!settings) return;
        const envelope = decodeEnvelope(topic, data, settings.serializeEnvelope);
        if (typeof envelope === 'string') {
            this._counters.incrementOne(this.counter('malformed_messages'));
            this._logger.error(NO_CID, null as unknown as Error, 'MQTT queue %s dropped a malformed message from %s: %s',
                this.getName(), topic, envelope);
            return;
        }
        envelope.setReference(packet);
        if (!this._buffer.push(envelope)) {
            this._counters.incrementOne(this.counter('dropped_messages'));
            if (this._dropping++ === 0) {
                this._logger.warn(NO_CID, 'MQTT queue %s is full (%d messages, options.max_buffered): dropping incoming messages until it has room',
                    this.getName(), this._buffer.limit);
            }
            return;
        }
        if (this._dropping > 0) {
            this._logger.warn(NO_CID, 'MQTT queue %s has room again after dropping %d messages', this.getName(), this._dropping);
            this._dropping = 0;
        }
        this._counters.incrementOne(this.counter('received_messages'));
        this._logger.trace(NO_CID, 'MQTT queue %s received message %s', this.getName(), envelope.message_id);
        if (this._receiver) this.pump();
    }

    /**
     * Hands buffered messages to the receiver one at a time, in order; one drain per listen(). A
     * new listen() starts a new drain, so a receiver that never settles blocks only itself.
     */
    private pump(): void {
        const receiver = this._receiver;
        if (!receiver || this._drainingEpoch === this._listenEpoch) return;
        this._drainingEpoch = this._listenEpoch;
        void this.drain(this._listenEpoch, receiver);
    }

    private async drain(epoch: number, receiver: IMessageReceiver): Promise<void> {
        try {
            // An older drain may still be handing this receiver a message: one at a time, in order.
            const previous = this._delivering.get(receiver);
            if (previous) await previous.catch(() => undefined);
            for (;;) {
                if (this._listenEpoch !== epoch) return;
                const message = this._buffer.shift();
                if (!message) return;
                const delivering = Promise.resolve().then(() => receiver.receiveMessage(message, this));
                this._delivering.set(receiver, delivering);
                try {
                    await delivering;
                } catch (err) {
                    this._logger.error(NO_CID, err as Error, 'MQTT queue %s: the receiver failed on message %s',
                        this.getName(), message.message_id);
                } finally {
                    if (this._delivering.get(receiver) === delivering) this._delivering.delete(receiver);
                }
            }
        } finally {
            // Runs in the same turn as the last empty check, so no message can slip in between.
            if (this._drainingEpoch === epoch) this._drainingEpoch = -1;
        }
    }

    /**
     * Publishes a message to the topic with the queue's QoS and retain flag. Resolves when it is
     * written (QoS 0) or acknowledged by the broker (QoS 1, 2). The envelope is not modified.
     *
     * @throws BadRequestException `MQTT_INVALID_ENVELOPE`, InvalidStateException `MQTT_NOT_OPENED`,
     *   and the errors of MqttConnection.publish().
     */
    public async send(correlationId: string | null, envelope: MessageEnvelope): Promise<void> {
        const connection = this.openConnection(correlationId);
        const settings = this._settings!;
        const payload = encodeEnvelope(correlationId, envelope, settings.serializeEnvelope);
        await connection.publish(settings.topic, payload, { qos: settings.qos, retain: settings.retain });
        this._counters.incrementOne(this.counter('sent_messages'));
        this._logger.trace(cid(correlationId), 'MQTT queue %s sent message %s', this.getName(), envelope.message_id);
    }

    /**
     * Sends a value: a Buffer as is, a string as UTF-8, anything else as JSON. (The messaging
     * package's own version would turn a Buffer into JSON.)
     */
    public override async sendAsObject(correlationId: string | null, messageType: string, message: unknown): Promise<void> {
        const envelope = new MessageEnvelope(cid(correlationId), messageType, null);
        if (Buffer.isBuffer(message)) envelope.message = message;
        else if (typeof message === 'string') envelope.setMessageAsString(message);
        else if (message !== undefined) {
            let json: string | undefined;
            try {
                json = JSON.stringify(message);
            } catch (err) {
                throw new BadRequestException(cid(correlationId), MqttErrorCode.InvalidEnvelope,
                    `The message cannot be sent as JSON: ${(err as Error).message}`).withCause(err as Error);
            }
            if (json === undefined) {
                throw new BadRequestException(cid(correlationId), MqttErrorCode.InvalidEnvelope, `A ${typeof message} cannot be sent as JSON`);
            }
            envelope.setMessageAsString(json);
        }
        await this.send(correlationId, envelope);
    }

    /**
     * The oldest buffered message without removing it, or null. Starts the subscription if there
     * is none yet, without waiting for it (nothing can be buffered before it); a failure is logged.
     */
    public async peek(correlationId: string | null): Promise<MessageEnvelope> {
        return (await this.peekFirst(correlationId, 1))[0] ?? NO_MESSAGE;
    }

    /** Up to `messageCount` buffered messages, oldest first, without removing them. Like peek(), starts the subscription. */
    public async peekBatch(correlationId: string | null, messageCount: number): Promise<MessageEnvelope[]> {
        if (typeof messageCount !== 'number' || !Number.isInteger(messageCount) || messageCount < 0) {
            throw new BadRequestException(cid(correlationId), MqttErrorCode.InvalidArgument,
                `messageCount must be a non-negative integer, not ${String(messageCount)}`);
        }
        return this.peekFirst(correlationId, messageCount);
    }

    /**
     * Removes and returns the oldest message; waits up to `waitTimeout` milliseconds for one to
     * arrive (no polling), then resolves null. Concurrent calls are served in call order.
     * close() resolves waiting calls with null.
     */
    public async receive(correlationId: string | null, waitTimeout: number): Promise<MessageEnvelope> {
        if (typeof waitTimeout !== 'number' || Number.isNaN(waitTimeout) || waitTimeout < 0) {
            throw new BadRequestException(cid(correlationId), MqttErrorCode.InvalidArgument,
                `waitTimeout must be a non-negative number of milliseconds, not ${String(waitTimeout)}`);
        }
        const started = Date.now();
        const generation = this._generation;
        // The subscription may wait for a reconnect: that counts against waitTimeout too.
        if (!(await settlesWithin(this.subscribeOnce(correlationId), waitTimeout))) return NO_MESSAGE;
        if (!this._opened || this._generation !== generation) return NO_MESSAGE;
        const message = await this._buffer.take(waitTimeout - (Date.now() - started));
        if (message) this._logger.trace(cid(correlationId), 'MQTT queue %s handed out message %s', this.getName(), message.message_id);
        return message ?? NO_MESSAGE;
    }

    /** MQTT has no message locks: does nothing (capabilities.canRenewLock is false). */
    public renewLock(_message: MessageEnvelope, _lockTimeout: number): Promise<void> {
        return Promise.resolve();
    }

    /** MQTT acknowledges on arrival: does nothing. */
    public complete(_message: MessageEnvelope): Promise<void> {
        return Promise.resolve();
    }

    /** MQTT cannot return a message to the broker: does nothing (capabilities.canAbandon is false). */
    public abandon(_message: MessageEnvelope): Promise<void> {
        return Promise.resolve();
    }

    /** MQTT has no dead-letter queue: does nothing (capabilities.canDeadLetter is false). */
    public moveToDeadLetter(_message: MessageEnvelope): Promise<void> {
        return Promise.resolve();
    }

    /**
     * Delivers messages to `receiver`, one at a time and in order: first those already buffered,
     * then each as it arrives. Returns at once; subscribes if needed (a failure is logged). A
     * receiver that throws is logged and gets the next message. Ends at endListen() or close().
     *
     * @throws BadRequestException `MQTT_INVALID_ARGUMENT` without a receiver, InvalidStateException `MQTT_NOT_OPENED`.
     */
    public listen(correlationId: string | null, receiver: IMessageReceiver): void {
        if (receiver == null || typeof receiver.receiveMessage !== 'function') {
            throw new BadRequestException(cid(correlationId), MqttErrorCode.InvalidArgument, 'receiver must have a receiveMessage method');
        }
        this.openConnection(correlationId);
        this._receiver = receiver;
        this._listenEpoch++;
        this._logger.trace(cid(correlationId), 'MQTT queue %s started listening', this.getName());
        this.startSubscription(correlationId);
        this.pump();
    }

    /** Like listen(), on the next turn of the event loop; errors are logged, not thrown. */
    public override beginListen(correlationId: string | null, receiver: IMessageReceiver): void {
        const epoch = this._listenEpoch;
        setImmediate(() => {
            if (this._listenEpoch !== epoch) return; // endListen(), listen() or close() came first
            try {
                this.listen(correlationId, receiver);
            } catch (err) {
                this._logger.error(cid(correlationId), err as Error, 'MQTT queue %s cannot listen', this.getName());
            }
        });
    }

    /** Stops listening; messages go to the buffer again. The message being delivered finishes. */
    public endListen(_correlationId: string | null): void {
        this._receiver = null;
        this._listenEpoch++;
    }

    /** Drops every buffered message (the broker keeps its retained message, if any). */
    public clear(correlationId: string | null): Promise<void> {
        const dropped = this._buffer.clear();
        if (dropped > 0) this._logger.trace(cid(correlationId), 'MQTT queue %s cleared %d messages', this.getName(), dropped);
        return Promise.resolve();
    }

    /** The number of buffered messages. */
    public readMessageCount(): Promise<number> {
        return Promise.resolve(this._buffer.length);
    }
}

function isMqttConnection(value: unknown): value is MqttConnection {
    if (value instanceof MqttConnection) return true;
    const candidate = value as Partial<Record<keyof MqttConnection, unknown>>;
    return typeof value === 'object' && value != null
        && (['open', 'close', 'isOpen', 'publish', 'subscribe', 'unsubscribe', 'getConnection'] as const)
            .every((method) => typeof candidate[method] === 'function');
}

/** True when `promise` fulfils within `ms`, false after; rejects as it does within `ms`. */
async function settlesWithin(promise: Promise<void>, ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
        return await Promise.race([
            promise.then(() => true),
            new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), Math.min(ms, 2147483647)); }),
        ]);
    } finally {
        clearTimeout(timer);
    }
}
