import type { Packet } from 'mqtt';

/**
 * Closes in a row that count against the same packet before it is declared poison. A broker
 * killed or a network cut while a packet waits for its answer counts once; the same packet at
 * three closes in a row, each time resent first, is the broker's answer to it.
 */
export const CLOSES_TO_POISON = 3;

/**
 * How soon after a packet was written a close may come to count against it. A broker closes on a
 * packet it refuses as soon as it reads it: one round trip. A broker in trouble closes later, on
 * whatever was last sent: a NATS node while its cluster elects a leader takes a QoS 1 PUBLISH and
 * closes the connection when storing it times out, 4 s later, on every node in turn. Counting
 * those would fail a good publish.
 */
export const POISON_REACTION_MS = 2000;

/** A packet the broker closed the connection on, again and again. */
export type MqttPoison =
    | { readonly cmd: 'publish'; readonly messageId: number; readonly topic: string; readonly qos: 1 | 2 }
    | { readonly cmd: 'subscribe'; readonly topic: string };

/**
 * Finds poison packets: a PUBLISH or SUBSCRIBE after which the broker closes the connection,
 * unanswered, again and again (a topic the broker takes as malformed, a packet over its size
 * limit under MQTT 3.1.1, a publish to `$SYS/...` on Aedes). Sent again after every reconnect,
 * such a packet would jam the connection for good: MQTT.js resends its stored publishes one at
 * a time and reports the connection up only when all are answered, and the subscriptions resend
 * their SUBSCRIBEs after each reconnect.
 *
 * What a close counts against, when the connection had its CONNACK:
 * - while MQTT.js resends its store (CONNACK seen, 'connect' not yet): the QoS 1 or 2 PUBLISH it
 *   resent last, when the broker has not answered it (the resend waits for each answer);
 * - otherwise the oldest SUBSCRIBE written on the connection and not answered.
 * A close counts only within [[POISON_REACTION_MS]] of the packet's write. The same packet at
 * [[CLOSES_TO_POISON]] closes in a row is reported to `poisoned`; a close with nothing to count
 * against, against another packet, or later than that, starts the count again.
 *
 * Outside the resend, the watch looks at SUBSCRIBEs only, so the publish path pays one
 * comparison per packet.
 */
export class MqttPoisonWatch {
    /** True from a CONNACK to MQTT.js's 'connect' (its resend is over) or the close. */
    private _resending = false;
    /** True from a CONNACK to the close. */
    private _connacked = false;
    /** The QoS 1/2 PUBLISH resent last and not answered, during the resend. */
    private _resent: { messageId: number; topic: string; qos: 1 | 2; writtenAt: number } | null = null;
    /** The SUBSCRIBEs written on this connection and not answered, by message id, oldest first, with when they were written. */
    private readonly _subscribes = new Map<number, { filter: string; writtenAt: number }>();
    /** What the last closes counted against (`p<id>` or `s<filter>`), and how many in a row. */
    private _suspect: { key: string; closes: number } | null = null;
    /** Filters found poison whose subscribe() has not yet been told. */
    private readonly _poisonFilters = new Set<string>();

    public constructor(on: (event: string, handler: (...args: never[]) => void) => void, private readonly _poisoned: (poison: MqttPoison) => void) {
        on('packetsend', (packet: Packet) => this.written(packet));
        on('packetreceive', (packet: Packet) => this.read(packet));
        on('connect', () => { this._resending = false; this._resent = null; });
        on('close', () => this.closed());
    }

    /** True once, for a filter found poison: its subscribe() fails with the poison error instead of trying again. */
    public takePoisonFilter(filter: string): boolean {
        return this._poisonFilters.delete(filter);
    }

    private written(packet: Packet): void {
        if (packet.cmd === 'publish') {
            if (this._resending && packet.qos > 0 && packet.messageId !== undefined) {
                this._resent = { messageId: packet.messageId, topic: packet.topic, qos: packet.qos as 1 | 2, writtenAt: Date.now() };
            }
            return;
        }
        if (packet.cmd === 'subscribe' && packet.messageId !== undefined) {
            this._subscribes.set(packet.messageId, { filter: packet.subscriptions.map((s) => s.topic).join('\n'), writtenAt: Date.now() });
        } else if (packet.cmd === 'pubrel' && this._resending) {
            this._resent = null;
        }
    }

    private read(packet: Packet): void {
        switch (packet.cmd) {
            case 'connack':
                this._connacked = true;
                this._resending = true;
                this._resent = null;
                this._subscribes.clear();
                return;
            case 'puback':
            case 'pubrec':
                if (this._resent !== null && this._resent.messageId === packet.messageId) {
                    this._resent = null;
                    this.answered(`p${packet.messageId}`);
                }
                return;
            case 'suback': {
                const written = packet.messageId !== undefined ? this._subscribes.get(packet.messageId) : undefined;
                if (written === undefined) return;
                this._subscribes.delete(packet.messageId!);
                this.answered(`s${written.filter}`);
                return;
            }
            default:
        }
    }

    /** The broker answered the packet of `key`: whatever the closes before were, it is not poison. */
    private answered(key: string): void {
        if (this._suspect?.key === key) this._suspect = null;
    }

    private closed(): void {
        const connacked = this._connacked;
        const resent = this._resending ? this._resent : null;
        const subscribe = this._subscribes.values().next();
        this._connacked = false;
        this._resending = false;
        this._resent = null;
        this._subscribes.clear();
        if (!connacked) return;
        const writtenAt = resent !== null ? resent.writtenAt : subscribe.done ? 0 : subscribe.value.writtenAt;
        const poison: MqttPoison | null = resent !== null ? { cmd: 'publish', messageId: resent.messageId, topic: resent.topic, qos: resent.qos }
            : subscribe.done ? null : { cmd: 'subscribe', topic: subscribe.value.filter };
        if (poison === null || Date.now() - writtenAt > POISON_REACTION_MS) {
            this._suspect = null;
            return;
        }
        const key = poison.cmd === 'publish' ? `p${poison.messageId}` : `s${poison.topic}`;
        const closes = this._suspect?.key === key ? this._suspect.closes + 1 : 1;
        if (closes < CLOSES_TO_POISON) {
            this._suspect = { key, closes };
            return;
        }
        this._suspect = null;
        if (poison.cmd === 'subscribe') this._poisonFilters.add(poison.topic);
        this._poisoned(poison);
    }
}
