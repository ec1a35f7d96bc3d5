import { inspect } from 'node:util';

import type { IClientPublishOptions, MqttClient } from 'mqtt';
import {
    ConfigException, ConfigParams, InvalidStateException,
    type ICleanable, type IOpenable, type IReferences, type IUnreferenceable,
} from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';
import { type MessageEnvelope, MessageQueue, MessagingCapabilities, type IMessageReceiver } from 'pip-services3-messaging-nodex';

import { cid, logsAt, NO_MESSAGE, reportingOf } from '../shared/pip';
import { type MqttConnection } from '../connect/MqttConnection';
import { MqttErrorCode } from '../connect/errors/MqttErrorCode';
import { closedWhileOpening, toError } from '../connect/errors/MqttErrors';
import { checkArgument } from '../connect/errors/MqttInputs';
import { redactConfig } from '../connect/config/redact';
import { OpenCloseGuard } from '../shared/OpenCloseGuard';
import { settlesWithin, untilAborted } from '../shared/promises';
import { encodeEnvelope, envelopeOf, envelopeUserProperties } from './MqttEnvelopeCodec';
import { MqttQueueConnections } from './MqttQueueConnections';
import { MqttQueueInbox, queueCounter } from './MqttQueueInbox';
import { MqttQueueSubscription } from './MqttQueueSubscription';
import { MQTT_QUEUE_DEFAULTS, readQueueSettings, type MqttQueueSettings } from './MqttQueueSettings';

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
 * peek(), peekBatch(), receive() or listen(). close() unsubscribes (and waits for the broker),
 * except from a connection of the queue's own with `options.clean_session` false: the broker then
 * keeps the subscription in the session and collects the queue's QoS 1/2 messages until it opens again.
 * When the owner of a shared connection closes it, the subscription goes with it: isOpen() turns
 * false, and open() subscribes again.
 *
 * At least once: with `options.acknowledge` after_processing (the default) a QoS 1 message is
 * acknowledged to the broker only once it is settled: complete() after receive(), the receiver's
 * promise for listen() (resolved or rejected), abandon() or moveToDeadLetter(). Until then a
 * broker that keeps the session (`clean_session` false with a fixed `client_id`) sends it again
 * if the consumer dies or its connection drops; PUBACKs go in arrival order, and the broker sends
 * no more than its in-flight window unacknowledged, so a full buffer never drops such a message.
 * abandon() publishes the message to the topic again (same envelope) and then acknowledges the
 * original; moveToDeadLetter() publishes it to `options.dead_letter_topic`. QoS 0 messages have no
 * acknowledgement; QoS 2 messages are taken (PUBREC) by MQTT.js when they arrive, and their
 * PUBCOMP waits until they are settled (the in-flight window bounds them; a dying consumer loses them). With
 * `options.acknowledge` on_arrival, MQTT.js acknowledges every message as it arrives: a message
 * buffered or being processed is then lost if the process stops.
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
 *                                  dropped, logged and counted, except QoS 1/2 messages acknowledged after processing,
 *                                  which the broker's in-flight window bounds instead (default: 10000)
 *   - __acknowledge__:             (optional) after_processing or on_arrival: when QoS 1/2 messages are acknowledged
 *                                  to the broker (default: after_processing)
 *   - __dead_letter_topic__:       (optional) the topic moveToDeadLetter() publishes to (default: none; it then fails
 *                                  with `MQTT_NO_DEAD_LETTER_TOPIC`)
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
    /** The shared connection from the references, or the queue's own. */
    private readonly _connections = new MqttQueueConnections();
    /** The connection in use while open. */
    private _connection: MqttConnection | null = null;
    private _settings: MqttQueueSettings | null = null;
    private _opened = false;
    /** The connection's client when the queue opened: another client means it was closed and reopened. */
    private _openedOn: MqttClient | null = null;
    private readonly _guard = new OpenCloseGuard((correlationId) => this.closedWhileOpening(correlationId));
    private readonly closedWhileOpening = (correlationId: string | null): InvalidStateException =>
        closedWhileOpening(correlationId, `MQTT queue ${this.getName()}`);
    /** Incremented by close(): an open() or receive() that sees it change was closed meanwhile. */
    private _generation = 0;

    private readonly _reporting = reportingOf(() => this._logger, () => this._counters);
    private readonly _inbox = new MqttQueueInbox(this, () => this.getName(), this._reporting);
    private readonly _buffer = this._inbox.buffer;
    private readonly _subscription = new MqttQueueSubscription({
        // Until close() has removed the listener, a message is kept.
        onMessage: (topic, data, packet) => {
            const settings = this._settings;
            if (!settings) return;
            const acknowledge = settings.acknowledge === 'after_processing' ? this._connection?.deferAcknowledgement(packet) ?? null : null;
            this._inbox.accept(topic, data, packet, settings.serializeEnvelope, acknowledge);
        },
    }, () => this.getName(), this._reporting);

    /** @param name (optional) the queue name; also the default topic. */
    public constructor(name?: string) {
        super(name, capabilities(false));
    }

    /** Configures the queue; values are checked at open(), which raises ConfigException. */
    public override configure(config: ConfigParams): void {
        super.configure(config);
        this._config = config;
        this._connections.configure(config);
    }

    /**
     * Sets references: logger, counters, and the MqttConnection to share.
     * @throws ConfigException `MQTT_BAD_REFERENCE` when the component found as the connection is not an MqttConnection.
     */
    public override setReferences(references: IReferences): void {
        super.setReferences(references);
        this._connections.setReferences(references, this.getName());
    }

    /** Forgets the references; a shared connection in use stays in use until close(). */
    public unsetReferences(): void {
        this._connections.unsetReferences();
    }

    /** For JSON.stringify: name, state, connection and configuration, with secrets replaced by `***`. */
    public toJSON(): Record<string, unknown> {
        return {
            component: 'MqttMessageQueue',
            name: this.getName(),
            topic: this._settings?.topic ?? null,
            open: this.isOpen(),
            connection: this._connection?.toJSON() ?? null,
            config: redactConfig(this._config),
        };
    }

    /** For console.log and util.inspect: what toJSON() shows, so no secret is printed. */
    public [inspect.custom](): Record<string, unknown> {
        return this.toJSON();
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
    public override open(correlationId: string | null): Promise<void> {
        return this._guard.open(correlationId, () => this.isOpen(), (signal) => this.doOpen(correlationId, signal));
    }

    private async doOpen(correlationId: string | null, signal: AbortSignal): Promise<void> {
        const generation = this._generation;
        const settings = readQueueSettings(correlationId, this._config, this.getName());
        if (this.getName() == null || this.getName() === '') this._name = settings.topic;
        this._settings = settings;
        this._buffer.limit = settings.maxBuffered;
        this._capabilities = capabilities(settings.deadLetterTopic !== null);

        const connection = this._connections.pick();
        this._connection = connection;
        // close() ends this wait at once: a shared connection goes on opening for its owner.
        await untilAborted(connection.open(correlationId), signal);
        const checkClosed = (): void => { if (this._generation !== generation) throw this.closedWhileOpening(correlationId); };
        checkClosed();
        this._opened = true;
        this._openedOn = connection.getConnection();
        if (settings.autosubscribe || this._inbox.receiver) {
            try {
                await this.subscribeOnce(correlationId);
                checkClosed();
            } catch (err) {
                if (this._generation === generation) {
                    this._opened = false;
                    this._openedOn = null;
                    if (this._connections.owns(connection)) await connection.close(correlationId);
                }
                throw err;
            }
        }
        this._logger.debug(cid(correlationId), 'Opened MQTT queue %s on topic %s', this.getName(), settings.topic);
    }

    /**
     * Closes the queue: pending receive() calls resolve null, listening ends, the subscription is
     * dropped (awaited), and a connection of its own is closed; a shared one stays open. Messages
     * already buffered stay for after a reopen (clear() drops them). Idempotent.
     */
    public close(correlationId: string | null): Promise<void> {
        return this._guard.close(() => this.doClose(correlationId));
    }

    private async doClose(correlationId: string | null): Promise<void> {
        this._generation++;
        this._guard.abortOpening(correlationId);
        const connection = this._connection;
        const owned = this._connections.owns(connection);
        const wasOpen = this._opened;
        // From here on nothing is handed to a receiver or a waiting receive().
        this._opened = false;
        this._openedOn = null;
        this._inbox.stop();
        this._buffer.releaseWaiters();
        // A local connection's close() also ends an open() in flight.
        const opening = this._guard.opening;
        if (opening && owned) await connection.close(correlationId);
        // Removing the listener first also settles a subscribe() still waiting for it (a reconnect
        // may be far away), including the one of an open() in flight, which then fails with MQTT_CLOSED.
        // A connection of its own with a persistent session goes away without unsubscribing, so the
        // broker keeps collecting the queue's messages for the next open().
        const keepSession = owned && connection != null && !connection.isCleanSession();
        this._inbox.closing(keepSession);
        const unsubscribing = this._subscription.end(correlationId, connection, this._settings?.filter, keepSession);
        await this._guard.openingSettled();
        await unsubscribing;
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
        return this._subscription.once(correlationId, connection, this._settings!.filter, this._settings!.qos);
    }

    private peekFirst(correlationId: string | null, count: number): Promise<MessageEnvelope[]> {
        try {
            this.startSubscription(correlationId);
        } catch (err) {
            return Promise.reject(toError(err));
        }
        return Promise.resolve(this._buffer.peek(count));
    }

    /** Subscribes if not yet subscribed, without waiting; a failure is logged. @throws `MQTT_NOT_OPENED`. */
    private startSubscription(correlationId: string | null): void {
        this._subscription.start(correlationId, this.openConnection(correlationId), this._settings!.filter, this._settings!.qos);
    }

    /**
     * Publishes a message to the topic with the queue's QoS and retain flag. Resolves when it is
     * written (QoS 0) or acknowledged by the broker (QoS 1, 2). The envelope is not modified.
     *
     * @throws BadRequestException `MQTT_INVALID_ENVELOPE`, InvalidStateException `MQTT_NOT_OPENED`,
     *   and the errors of MqttConnection.publish().
     */
    public send(correlationId: string | null, envelope: MessageEnvelope): Promise<void> {
        let connection: MqttConnection;
        let payload: Buffer | string;
        try {
            connection = this.openConnection(correlationId);
            payload = encodeEnvelope(correlationId, envelope, this._settings!.serializeEnvelope);
        } catch (err) {
            return Promise.reject(toError(err));
        }
        const settings = this._settings!;
        const options: IClientPublishOptions = { qos: settings.qos, retain: settings.retain };
        // Raw over MQTT 5: the envelope's fields travel as user properties, beside the bytes.
        if (!settings.serializeEnvelope && connection.getProtocolVersion() === 5) {
            options.properties = { userProperties: envelopeUserProperties(correlationId, envelope) };
        }
        // Not async: one promise less per message (see bench/, scenario 4).
        return connection.publish(settings.topic, payload, options).then(() => {
            this._counters.incrementOne(queueCounter(this.getName(), 'sent_messages'));
            if (logsAt(this._logger, LogLevel.Trace)) {
                this._logger.trace(cid(correlationId), 'MQTT queue %s sent message %s', this.getName(), envelope.message_id);
            }
        });
    }

    /**
     * Sends a value: a Buffer as is, a string as UTF-8, anything else as JSON. (The messaging
     * package's own version would turn a Buffer into JSON.)
     */
    public override async sendAsObject(correlationId: string | null, messageType: string, message: unknown): Promise<void> {
        await this.send(correlationId, envelopeOf(correlationId, messageType, message));
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
        checkArgument(correlationId, Number.isInteger(messageCount) && messageCount >= 0,
            () => `messageCount must be a non-negative integer, not ${String(messageCount)}`);
        return this.peekFirst(correlationId, messageCount);
    }

    /**
     * Removes and returns the oldest message; waits up to `waitTimeout` milliseconds for one to
     * arrive (no polling), then resolves null. Concurrent calls are served in call order.
     * close() resolves waiting calls with null.
     */
    public async receive(correlationId: string | null, waitTimeout: number): Promise<MessageEnvelope> {
        checkArgument(correlationId, typeof waitTimeout === 'number' && !Number.isNaN(waitTimeout) && waitTimeout >= 0,
            () => `waitTimeout must be a non-negative number of milliseconds, not ${String(waitTimeout)}`);
        const started = Date.now();
        const generation = this._generation;
        // The subscription may wait for a reconnect: that counts against waitTimeout too.
        if (!(await settlesWithin(this.subscribeOnce(correlationId), waitTimeout))) return NO_MESSAGE;
        if (!this._opened || this._generation !== generation) return NO_MESSAGE;
        const message = await this._buffer.take(waitTimeout - (Date.now() - started));
        if (message && logsAt(this._logger, LogLevel.Trace)) {
            this._logger.trace(cid(correlationId), 'MQTT queue %s handed out message %s', this.getName(), message.message_id);
        }
        return message ?? NO_MESSAGE;
    }

    /**
     * Does nothing: MQTT has no lock that expires. A received message stays the receiver's until
     * it is settled (capabilities.canRenewLock is false).
     */
    public renewLock(_message: MessageEnvelope, _lockTimeout: number): Promise<void> { return Promise.resolve(); }

    /**
     * The message is done with: with `options.acknowledge` after_processing (the default), its
     * QoS 1 PUBACK goes to the broker now (in arrival order, see MqttConnection.deferAcknowledgement);
     * before, a crash or a lost connection makes a broker that keeps the session send it again. The
     * message has no reference afterwards. A second call does nothing.
     */
    public complete(message: MessageEnvelope): Promise<void> {
        this._inbox.settle(message);
        return Promise.resolve();
    }

    /**
     * Makes the message available again: MQTT has no negative acknowledgement, so it is published
     * to the queue's topic once more (the same envelope, message_id included), then settled as
     * complete() does. It comes back after the messages already on their way, counted as sent.
     * When the publish fails the message is not settled (and the call rejects).
     *
     * @throws the errors of MqttConnection.publish(), InvalidStateException `MQTT_NOT_OPENED`.
     */
    public async abandon(message: MessageEnvelope): Promise<void> {
        await this.republish(message, this._settings?.topic ?? null);
        this._inbox.settle(message);
    }

    /**
     * Publishes the message to `options.dead_letter_topic` (the same envelope, at the queue's QoS),
     * then settles it as complete() does.
     *
     * @throws ConfigException `MQTT_NO_DEAD_LETTER_TOPIC` when none is configured (capabilities.canDeadLetter
     *   says whether one is), the errors of MqttConnection.publish(), InvalidStateException `MQTT_NOT_OPENED`.
     */
    public async moveToDeadLetter(message: MessageEnvelope): Promise<void> {
        const topic = this._settings?.deadLetterTopic ?? null;
        if (this._settings !== null && topic === null) {
            throw new ConfigException(message?.correlation_id ?? null, MqttErrorCode.NoDeadLetterTopic,
                `MQTT queue ${this.getName()} has no dead-letter topic: set options.dead_letter_topic`)
                .withDetails('key', 'options.dead_letter_topic');
        }
        await this.republish(message, topic);
        this._inbox.settle(message);
    }

    /** Publishes an envelope again, to `topic`, at the queue's QoS, never retained. */
    private async republish(message: MessageEnvelope, topic: string | null): Promise<void> {
        const correlationId = message?.correlation_id ?? null;
        const connection = this.openConnection(correlationId);
        const settings = this._settings!;
        const payload = encodeEnvelope(correlationId, message, settings.serializeEnvelope);
        const options: IClientPublishOptions = { qos: settings.qos };
        if (!settings.serializeEnvelope && connection.getProtocolVersion() === 5) {
            options.properties = { userProperties: envelopeUserProperties(correlationId, message) };
        }
        await connection.publish(topic!, payload, options);
        this._counters.incrementOne(queueCounter(this.getName(), 'sent_messages'));
    }

    /**
     * Delivers messages to `receiver`, one at a time and in order: first those already buffered,
     * then each as it arrives. Returns at once; subscribes if needed (a failure is logged). A
     * receiver that throws is logged and gets the next message. Ends at endListen() or close().
     *
     * @throws BadRequestException `MQTT_INVALID_ARGUMENT` without a receiver, InvalidStateException `MQTT_NOT_OPENED`.
     */
    public listen(correlationId: string | null, receiver: IMessageReceiver): void {
        checkArgument(correlationId, typeof receiver?.receiveMessage === 'function', () => 'receiver must have a receiveMessage method');
        this.openConnection(correlationId);
        this._logger.trace(cid(correlationId), 'MQTT queue %s started listening', this.getName());
        this.startSubscription(correlationId);
        this._inbox.listen(receiver);
    }

    /** Like listen(), on the next turn of the event loop; errors are logged, not thrown. */
    public override beginListen(correlationId: string | null, receiver: IMessageReceiver): void {
        this._inbox.onNextTurn(() => this.listen(correlationId, receiver),
            (err) => this._logger.error(cid(correlationId), err, 'MQTT queue %s cannot listen', this.getName()));
    }

    /** Stops listening; messages go to the buffer again. The message being delivered finishes. */
    public endListen(_correlationId: string | null): void {
        this._inbox.stop();
    }

    /** Drops every buffered message (the broker keeps its retained message, if any). */
    public clear(correlationId: string | null): Promise<void> {
        const dropped = this._inbox.clear();
        if (dropped > 0) this._logger.trace(cid(correlationId), 'MQTT queue %s cleared %d messages', this.getName(), dropped);
        return Promise.resolve();
    }

    /** The number of buffered messages. */
    public readMessageCount(): Promise<number> {
        return Promise.resolve(this._buffer.length);
    }
}

/** What the queue can do: every MessageQueue call, dead letters only with a topic for them, no lock to renew. */
function capabilities(deadLetters: boolean): MessagingCapabilities {
    return new MessagingCapabilities(true, true, true, true, true, false, true, deadLetters, true);
}
