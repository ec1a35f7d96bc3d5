import type { IPublishPacket } from 'mqtt';
import { LogLevel } from 'pip-services3-components-nodex';
import type { IMessageQueue, IMessageReceiver, MessageEnvelope } from 'pip-services3-messaging-nodex';

import { NO_CID, logsAt, type MqttReporting } from '../shared/pip';
import { toError } from '../connect/errors/MqttErrors';
import { decodeEnvelope } from './MqttEnvelopeCodec';
import { MqttMessageBuffer } from './MqttMessageBuffer';

/** The name of a queue's counter: `queue.<queue name>.<counter>`. */
export function queueCounter(queueName: string, counter: string): string {
    return `queue.${queueName}.${counter}`;
}

/**
 * The receiving side of a queue: turns incoming payloads into envelopes, keeps them in a
 * bounded buffer (counting and logging what it drops), and hands them to the listening receiver.
 * No I/O of its own. Internal to the package.
 */
export class MqttQueueInbox {
    public readonly buffer = new MqttMessageBuffer(10000);
    private _receiver: IMessageReceiver | null = null;
    /** Changed by listen() and stop(): a drain or a beginListen() of an older epoch stops. */
    private _epoch = 0;
    /** The epoch of the drain running, or -1. */
    private _drainingEpoch = -1;
    /** The delivery in progress to each receiver, so that a new drain for it waits for it. */
    private readonly _delivering = new Map<IMessageReceiver, Promise<unknown>>();
    /** Messages dropped since the buffer last had room; > 0 while dropping. */
    private _dropping = 0;
    /** The broker acknowledgement each message not yet settled waits for (acknowledgement after processing). */
    private readonly _unsettled = new WeakMap<MessageEnvelope, () => void>();

    /**
     * @param _queue     the queue, handed to the receiver with each message.
     * @param _name      the queue's name now (it can change until open()).
     * @param _reporting the queue's logger and counters.
     */
    public constructor(private readonly _queue: IMessageQueue, private readonly _name: () => string, private readonly _reporting: MqttReporting) {}

    /** The listening receiver, or null. */
    public get receiver(): IMessageReceiver | null {
        return this._receiver;
    }

    /** Runs `run` on the next turn of the event loop unless listen() or stop() came first; `failed` gets what it throws. */
    public onNextTurn(run: () => void, failed: (err: Error) => void): void {
        const epoch = this._epoch;
        setImmediate(() => {
            if (this._epoch !== epoch) return;
            try {
                run();
            } catch (err) {
                failed(toError(err));
            }
        });
    }

    private counter(name: string): string {
        return queueCounter(this._name(), name);
    }

    /**
     * Takes an incoming message: decoded, then to a waiting receive(), the receiver or the buffer.
     * @param acknowledge the broker acknowledgement that waits until the message is settled
     *   (see settle()), or null: a message with one is never dropped for a full buffer.
     */
    public accept(topic: string, data: Buffer, packet: IPublishPacket, serializeEnvelope: boolean, acknowledge: (() => void) | null): void {
        const { logger, counters } = this._reporting;
        const name = this._name();
        const envelope = decodeEnvelope(topic, data, serializeEnvelope, packet.properties);
        if (typeof envelope === 'string') {
            // Of no use to anyone: acknowledged, so the broker does not send it again.
            acknowledge?.();
            counters.incrementOne(this.counter('malformed_messages'));
            logger.error(NO_CID, null as unknown as Error, 'MQTT queue %s dropped a malformed message from %s: %s', name, topic, envelope);
            return;
        }
        envelope.setReference(packet);
        if (acknowledge !== null) this._unsettled.set(envelope, acknowledge);
        if (!this.buffer.push(envelope, acknowledge !== null)) {
            counters.incrementOne(this.counter('dropped_messages'));
            if (this._dropping++ === 0) {
                logger.warn(NO_CID, 'MQTT queue %s is full (%d messages, options.max_buffered): dropping incoming messages until it has room',
                    name, this.buffer.limit);
            }
            return;
        }
        if (this._dropping > 0) {
            logger.warn(NO_CID, 'MQTT queue %s has room again after dropping %d messages', name, this._dropping);
            this._dropping = 0;
        }
        counters.incrementOne(this.counter('received_messages'));
        if (logsAt(logger, LogLevel.Trace)) logger.trace(NO_CID, 'MQTT queue %s received message %s', name, envelope.message_id);
        if (this._receiver) this.pump();
    }

    /**
     * The message is done with (completed, abandoned, moved to the dead letters, or handled by
     * the receiver): its broker acknowledgement goes out, and it no longer has a reference.
     * @returns false when it was settled before (or never waited for one).
     */
    public settle(message: MessageEnvelope): boolean {
        const acknowledge = this._unsettled.get(message);
        message.setReference(null);
        if (acknowledge === undefined) return false;
        this._unsettled.delete(message);
        acknowledge();
        return true;
    }

    /** Drops every buffered message, each settled (the broker may forget it). @returns how many. */
    public clear(): number {
        const dropped = this.buffer.clear();
        for (const message of dropped) this.settle(message);
        return dropped.length;
    }

    /**
     * The queue closes. The buffered messages still waiting for their acknowledgement: with a
     * session the broker keeps (`sentAgain`), they go (the broker sends them again, to this queue
     * when it opens again); otherwise they are acknowledged now and stay buffered for a reopen
     * (on a shared connection, later PUBACKs would wait behind theirs).
     */
    public closing(sentAgain: boolean): void {
        if (sentAgain) {
            this.buffer.filter((message) => !this._unsettled.delete(message));
            return;
        }
        for (const message of this.buffer.peek(this.buffer.length)) this.settle(message);
    }

    /** Starts delivering to `receiver`: the buffered messages first, then each new one. */
    public listen(receiver: IMessageReceiver): void {
        this._receiver = receiver;
        this._epoch++;
        this.pump();
    }

    /** Stops delivering; messages stay in the buffer. The message being delivered finishes. */
    public stop(): void {
        this._receiver = null;
        this._epoch++;
    }

    /**
     * Hands buffered messages to the receiver one at a time, in order; one drain per listen(). A
     * new listen() starts a new drain, so a receiver that never settles blocks only itself.
     */
    private pump(): void {
        const receiver = this._receiver;
        if (!receiver || this._drainingEpoch === this._epoch) return;
        this._drainingEpoch = this._epoch;
        void this.drain(this._epoch, receiver);
    }

    private async drain(epoch: number, receiver: IMessageReceiver): Promise<void> {
        try {
            // An older drain may still be handing this receiver a message: one at a time, in order.
            // Either way the receiver is called in a turn of its own, never inside accept() or listen().
            const previous = this._delivering.get(receiver);
            await (previous ? previous.catch(() => undefined) : undefined);
            for (;;) {
                if (this._epoch !== epoch) return;
                const message = this.buffer.shift();
                if (!message) return;
                // Called directly, and awaited only when it returns a promise: a drain runs for
                // every message a listening queue gets, so no promises of its own per message.
                // Settled once the receiver is done, unless it settled the message itself (abandon(), say).
                let result: unknown;
                try {
                    result = receiver.receiveMessage(message, this._queue);
                } catch (err) {
                    this.receiverFailed(message, err);
                    this.settle(message);
                    continue;
                }
                if (!isThenable(result)) {
                    this.settle(message);
                    continue;
                }
                const delivering = Promise.resolve(result);
                this._delivering.set(receiver, delivering);
                try {
                    await delivering;
                } catch (err) {
                    this.receiverFailed(message, err);
                } finally {
                    this.settle(message);
                    if (this._delivering.get(receiver) === delivering) this._delivering.delete(receiver);
                }
            }
        } finally {
            // Runs in the same turn as the last empty check, so no message can slip in between.
            if (this._drainingEpoch === epoch) this._drainingEpoch = -1;
        }
    }

    private receiverFailed(message: MessageEnvelope, err: unknown): void {
        this._reporting.logger.error(NO_CID, err as Error, 'MQTT queue %s: the receiver failed on message %s', this._name(), message.message_id);
    }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
    return value != null && typeof (value as { then?: unknown }).then === 'function';
}
