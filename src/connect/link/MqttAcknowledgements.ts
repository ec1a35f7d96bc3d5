import type { IPublishPacket, MqttClient, Packet } from 'mqtt';

import { interceptAcknowledgements, type MqttPacketSender } from './mqttInternals';

/** Settles a held acknowledgement (see [[MqttAcknowledgements.hold]]); a second call does nothing. */
export type MqttSettle = () => void;

/** A PUBACK or PUBCOMP MQTT.js asked to send, waiting for the ones before it. */
interface QueuedAck {
    readonly packet: Packet;
    ready: boolean;
}

/**
 * Acknowledgement after processing for incoming QoS 1 and 2 messages. MQTT.js sends the last
 * answer (PUBACK for QoS 1; PUBCOMP for QoS 2, whose message it emits at PUBREL, after its PUBREC)
 * as soon as it has emitted the message; a listener that holds the message (hold(), while it is
 * given the message) keeps that answer back until it settles. For QoS 1 a broker keeping the
 * session then sends the message again when the connection ends first (a crash, a cut); for QoS 2
 * the broker took the message as delivered at PUBREC, so holding PUBCOMP only makes it count the
 * message against its in-flight window. MQTT 3.1.1 and 5 (section 4.6) want PUBACKs in the order
 * the PUBLISH packets came: answers go in the order MQTT.js asked for them, a settled one waiting
 * for those before it.
 *
 * MQTT.js reads the next packet only once the answer is handed on, so a held answer is not sent
 * but its callback is called at once: the connection goes on with everything else. The broker
 * then sends no more than its in-flight window of unanswered messages (Mosquitto's
 * `max_inflight_messages`, MQTT 5's receive maximum). Nothing is held across a connection: at the
 * close, held answers are dropped (their message ids mean nothing to the next connection) and
 * settling them does nothing; the broker sends a QoS 1 message again if it keeps the session
 * (and a QoS 2 PUBREL, which MQTT.js answers itself).
 *
 * Installed on the client at the first hold(), so a connection that never holds pays nothing.
 */
export class MqttAcknowledgements {
    /** Holders per message id of the current connection, while MQTT.js has not asked for the answer or it waits. */
    private readonly _holders = new Map<number, number>();
    /** Answers asked for while one is held, in order. */
    private _queue: QueuedAck[] = [];
    /** The answers of this connection waiting in `_queue`, by message id. */
    private readonly _queued = new Map<number, QueuedAck>();
    private _send: MqttPacketSender | null = null;
    /** The message MQTT.js is emitting now: the only one whose answer can still be held. */
    private _emitting: IPublishPacket | null = null;
    private _installed = false;
    /** Changes at every close: a settle from an earlier connection does nothing. */
    private _connection = 0;
    /** True from closing() on: no answer is sent any more, but that of `_lastDelivered`. */
    private _withholding = false;
    /** The message being given to the listeners when close() began (a listener that closes the connection). */
    private _lastDelivered: number | undefined;

    public constructor(private readonly _client: MqttClient) {}

    /** The message MQTT.js emits now (null once it is delivered): hold() can hold its answer meanwhile. */
    public set emitting(packet: IPublishPacket | null) {
        this._emitting = packet;
    }

    /**
     * Holds the PUBACK (QoS 1) or PUBCOMP (QoS 2) of a message being given to its listeners;
     * returns the settle, or null when there is nothing to hold (QoS 0; a message MQTT.js already
     * answered, such as one held for a later listener). Several holders of one message: the answer
     * goes once all have settled.
     */
    public hold(packet: IPublishPacket): MqttSettle | null {
        const id = packet.messageId;
        // Only while MQTT.js emits it: after that, its answer may be gone.
        if (packet !== this._emitting || packet.qos === 0 || id === undefined || !this.install()) return null;
        this._holders.set(id, (this._holders.get(id) ?? 0) + 1);
        const connection = this._connection;
        let settled = false;
        return () => {
            if (settled) return;
            settled = true;
            if (connection === this._connection) this.release(id);
        };
    }

    /**
     * close() has begun: the listeners are about to go, so a message that arrives from now on is
     * not delivered, and its answer must not go either (a kept session sends it again, as it
     * does with an unsettled one). Answers held or queued stay unsent too; only the message being
     * delivered now (a listener that calls close()) is still answered.
     */
    public closing(): void {
        this._lastDelivered = this._emitting?.messageId;
        this._withholding = this.install();
    }

    private install(): boolean {
        if (!this._installed) {
            this._installed = interceptAcknowledgements(this._client, (packet, cb, send) => this.asked(packet, cb, send));
        }
        return this._installed;
    }

    /** MQTT.js asks to send a PUBACK or PUBCOMP. */
    private asked(packet: Packet, cb: ((err?: Error) => void) | undefined, send: MqttPacketSender): void {
        this._send = send;
        const id = (packet as { messageId?: number }).messageId;
        if (this._withholding && !(id === this._lastDelivered && id !== undefined && !this._holders.has(id) && this._queue.length === 0)) {
            cb?.();
            return;
        }
        const held = id !== undefined && this._holders.has(id);
        if (!held && this._queue.length === 0) {
            send(packet, cb);
            return;
        }
        const ack: QueuedAck = { packet, ready: !held };
        this._queue.push(ack);
        if (id !== undefined) this._queued.set(id, ack);
        // MQTT.js reads the next packet once this is called: the answer waits, the connection does not.
        cb?.();
    }

    private release(id: number): void {
        const holders = (this._holders.get(id) ?? 1) - 1;
        if (holders > 0) {
            this._holders.set(id, holders);
            return;
        }
        this._holders.delete(id);
        const ack = this._queued.get(id);
        if (ack === undefined) return;
        ack.ready = true;
        this.flush();
    }

    /** Sends the answers at the head of the queue that are ready, in order. */
    private flush(): void {
        if (this._withholding) return;
        let sent = 0;
        while (sent < this._queue.length && this._queue[sent].ready) {
            const { packet } = this._queue[sent++];
            this._queued.delete((packet as { messageId: number }).messageId);
            this._send!(packet);
        }
        if (sent > 0) this._queue = this._queue.slice(sent);
    }

    /** The connection closed: what was held is dropped. */
    public closed(): void {
        this._connection++;
        this._holders.clear();
        this._queue = [];
        this._queued.clear();
    }
}
