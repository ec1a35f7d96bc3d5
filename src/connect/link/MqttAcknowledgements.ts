import type { IPublishPacket, MqttClient, Packet } from 'mqtt';

import { interceptPubacks, type MqttPacketSender } from './mqttInternals';

/** Settles a held acknowledgement (see [[MqttAcknowledgements.hold]]); a second call does nothing. */
export type MqttSettle = () => void;

/** A PUBACK MQTT.js asked to send, waiting for the ones before it. */
interface QueuedAck {
    readonly packet: Packet;
    ready: boolean;
}

/**
 * Acknowledgement after processing for incoming QoS 1 messages. MQTT.js sends the PUBACK as soon
 * as it has emitted the message; a listener that holds the message (hold(), while it is given the
 * message) keeps the PUBACK back until it settles, so a broker keeping the session sends the
 * message again when the connection ends first (a crash, a cut). MQTT 3.1.1 and 5 (section 4.6)
 * want PUBACKs in the order the PUBLISH packets came: a settled one waits for those before it.
 *
 * MQTT.js reads the next packet only once the PUBACK is handed on, so a held PUBACK is not sent
 * but its callback is called at once: the connection goes on with everything else. The broker
 * then sends no more than its in-flight window of unacknowledged messages (Mosquitto's
 * `max_inflight_messages`, MQTT 5's receive maximum). Nothing is held across a connection: at the
 * close, held PUBACKs are dropped (their message ids mean nothing to the next connection) and
 * settling them does nothing; the broker sends those messages again if it keeps the session.
 *
 * Installed on the client at the first hold(), so a connection that never holds pays nothing.
 */
export class MqttAcknowledgements {
    /** Holders per message id of the current connection, while MQTT.js has not asked for the PUBACK or it waits. */
    private readonly _holders = new Map<number, number>();
    /** PUBACKs asked for while one is held, in order. */
    private _queue: QueuedAck[] = [];
    /** The PUBACKs of this connection wait in `_queue`, by message id. */
    private readonly _queued = new Map<number, QueuedAck>();
    private _send: MqttPacketSender | null = null;
    /** The message MQTT.js is emitting now: the only one whose PUBACK can still be held. */
    private _emitting: IPublishPacket | null = null;
    private _installed = false;
    /** Changes at every close: a settle from an earlier connection does nothing. */
    private _connection = 0;

    public constructor(private readonly _client: MqttClient) {}

    /** Acknowledgements held now, waiting for a settle or for one before them. */
    public get pending(): number {
        return this._holders.size + this._queue.filter((ack) => ack.ready).length;
    }

    /** The message MQTT.js emits now (null once it is delivered): hold() can hold its PUBACK meanwhile. */
    public set emitting(packet: IPublishPacket | null) {
        this._emitting = packet;
    }

    /**
     * Holds the PUBACK of a QoS 1 message being given to its listeners; returns the settle, or
     * null when there is nothing to hold (QoS 0; QoS 2, whose PUBREC MQTT.js sent before the
     * message; a message MQTT.js already acknowledged, such as one held for a later listener).
     * Several holders of one message: the PUBACK goes once all have settled.
     */
    public hold(packet: IPublishPacket): MqttSettle | null {
        const id = packet.messageId;
        // Only while MQTT.js emits it: after that, its PUBACK may be gone.
        if (packet !== this._emitting || packet.qos !== 1 || id === undefined || !this.install()) return null;
        this._holders.set(id, (this._holders.get(id) ?? 0) + 1);
        const connection = this._connection;
        let settled = false;
        return () => {
            if (settled) return;
            settled = true;
            if (connection === this._connection) this.release(id);
        };
    }

    private install(): boolean {
        if (!this._installed) {
            this._installed = interceptPubacks(this._client, (packet, cb, send) => this.asked(packet, cb, send));
        }
        return this._installed;
    }

    /** MQTT.js asks to send a PUBACK. */
    private asked(packet: Packet, cb: ((err?: Error) => void) | undefined, send: MqttPacketSender): void {
        this._send = send;
        const id = (packet as { messageId?: number }).messageId;
        const held = id !== undefined && this._holders.has(id);
        if (!held && this._queue.length === 0) {
            send(packet, cb);
            return;
        }
        const ack: QueuedAck = { packet, ready: !held };
        this._queue.push(ack);
        if (id !== undefined) this._queued.set(id, ack);
        // MQTT.js reads the next packet once this is called: the PUBACK waits, the connection does not.
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

    /** Sends the PUBACKs at the head of the queue that are ready, in order. */
    private flush(): void {
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
