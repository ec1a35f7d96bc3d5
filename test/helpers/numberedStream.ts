// A numbered QoS 1 (or 2) stream from one MqttConnection to another, counted for loss and duplicates.
import type { IPublishPacket, MqttClient, Packet } from 'mqtt';

import type { IMqttMessageListener } from '../../src';
import { delay } from './net';

/** Slots per tracking ring. */
const RING = 1 << 20;

/** Where a NumberedStream publishes: an MqttConnection, or an adapter (a queue's send(), say). */
export interface NumberSender {
    publish(topic: string, data: string, options: { qos: 1 | 2 }): Promise<unknown>;
    /** False once closed for good: the stream then stops retrying. */
    isOpen(): boolean;
}

/** What a NumberedStream has seen so far. */
export interface StreamCounts {
    /** Numbers the broker acknowledged (publish() resolved). */
    readonly acknowledged: number;
    /** Distinct numbers received. */
    readonly received: number;
    /** Copies received beyond the first (QoS 1 allows them). */
    readonly duplicates: number;
    /** Acknowledged numbers not received (yet). */
    readonly missing: number;
    /** publish() calls that failed and were tried again. */
    readonly retries: number;
}

/**
 * Publishes 1, 2, 3, ... to a topic at QoS 1 (or 2) with up to `window` publishes in flight, and counts
 * what a listener receives. A publish that fails (offline limit, say) is tried again until it
 * succeeds, so every number is eventually acknowledged by the broker, and every acknowledged
 * number must arrive. Numbers are tracked in two fixed rings of 2^20 slots (8 MiB in all), so a
 * long soak does not grow: the counts stay exact, and missingNumbers() can list a number while
 * fewer than 2^20 numbers have been published after it.
 */
export class NumberedStream implements IMqttMessageListener {
    private _next = 1;
    private _running = false;
    private _loop: Promise<void> | null = null;
    private readonly _acked = new Uint32Array(RING);
    private readonly _seen = new Uint32Array(RING);
    private _ackedCount = 0;
    private _receivedCount = 0;
    private _duplicates = 0;
    private _retries = 0;
    /** The first rejections, for the report. */
    private readonly _rejections: string[] = [];
    private _missingAcked = 0;

    public constructor(
        private readonly _publisher: NumberSender,
        public readonly topic: string,
        private readonly _window = 20,
        /** Pause between publishes per slot in ms (0: as fast as the broker takes them). */
        private readonly _pauseMs = 0,
        private readonly _qos: 1 | 2 = 1,
    ) {}

    /** The listener side: subscribe it to `topic` on the subscribing connection. */
    public onMessage(_topic: string, data: Buffer, _packet: IPublishPacket): void {
        this.receive(data.toString());
    }

    /** Counts one received number (a message's payload as text): for receivers other than an MQTT listener. */
    public receive(text: string): void {
        const n = Number(text);
        if (!Number.isSafeInteger(n) || n < 1) return;
        if (NumberedStream.mark(this._seen, n)) {
            this._receivedCount++;
            if (NumberedStream.has(this._acked, n)) this._missingAcked--;
        } else {
            this._duplicates++;
        }
    }

    /** Starts publishing. */
    public start(): void {
        if (this._running) return;
        this._running = true;
        this._loop = Promise.all(Array.from({ length: this._window }, () => this.slot())).then(() => undefined);
    }

    /** Stops publishing and waits for the publishes in flight to be acknowledged. */
    public async stop(): Promise<void> {
        this._running = false;
        await this._loop;
    }

    /** The counts so far. */
    public counts(): StreamCounts {
        return {
            acknowledged: this._ackedCount,
            received: this._receivedCount,
            duplicates: this._duplicates,
            missing: this._missingAcked,
            retries: this._retries,
        };
    }

    /** The number the next publish will carry: numbers below it have been published (or are being). */
    public get nextNumber(): number {
        return this._next;
    }

    /** The first ten publish() rejections: the number and the message. */
    public rejections(): readonly string[] {
        return this._rejections;
    }

    /** The acknowledged numbers not received, up to `limit` of them. */
    public missingNumbers(limit = 20): number[] {
        const missing: number[] = [];
        for (let n = Math.max(1, this._next - RING); n < this._next && missing.length < limit; n++) {
            if (NumberedStream.has(this._acked, n) && !NumberedStream.has(this._seen, n)) missing.push(n);
        }
        return missing;
    }

    private async slot(): Promise<void> {
        while (this._running) {
            const n = this._next++;
            for (;;) {
                try {
                    await this._publisher.publish(this.topic, String(n), { qos: this._qos });
                    break;
                } catch (err) {
                    // Closed for good: give up on this number (it was never acknowledged).
                    if (!this._publisher.isOpen()) return;
                    this._retries++;
                    if (this._rejections.length < 10) this._rejections.push(`${n}: ${(err as Error).message}`);
                    await delay(50);
                }
            }
            NumberedStream.mark(this._acked, n);
            this._ackedCount++;
            if (!NumberedStream.has(this._seen, n)) this._missingAcked++;
            if (this._pauseMs > 0) await delay(this._pauseMs);
        }
    }

    /** Records n in a ring; true when it was not there before. */
    private static mark(ring: Uint32Array, n: number): boolean {
        const slot = n % RING;
        if (ring[slot] === n) return false;
        ring[slot] = n;
        return true;
    }

    private static has(ring: Uint32Array, n: number): boolean {
        return ring[n % RING] === n;
    }
}

/**
 * Records the numbers of every PUBLISH on a topic that reaches an MQTT.js client, before any
 * listener sees it (a ring like NumberedStream's), and those the client acknowledged (PUBACK). A
 * number the listener missed but the client acknowledged was lost by us; one the client never got
 * was lost by the broker.
 */
export class WireTap {
    private readonly _seen = new Uint32Array(RING);
    private readonly _acked = new Uint32Array(RING);
    /** The number of each QoS 1 PUBLISH received and not yet acknowledged, by message id. */
    private readonly _pending = new Map<number, number>();

    public constructor(client: MqttClient, topic: string) {
        client.on('packetreceive', (packet: Packet) => {
            if (packet.cmd !== 'publish' || packet.topic !== topic) return;
            const n = Number(packet.payload.toString());
            if (!Number.isSafeInteger(n) || n <= 0) return;
            this._seen[n % RING] = n;
            if (packet.messageId !== undefined) this._pending.set(packet.messageId, n);
        });
        client.on('packetsend', (packet: Packet) => {
            if (packet.cmd !== 'puback' || packet.messageId === undefined) return;
            const n = this._pending.get(packet.messageId);
            if (n === undefined) return;
            this._pending.delete(packet.messageId);
            this._acked[n % RING] = n;
        });
        // A message id is the connection's: what was not acknowledged before a close never will be on it.
        client.on('close', () => this._pending.clear());
    }

    /** True when a PUBLISH of number n reached the client. */
    public has(n: number): boolean {
        return this._seen[n % RING] === n;
    }

    /** True when the client acknowledged a PUBLISH of number n (PUBACK): the broker will not send it again. */
    public acknowledged(n: number): boolean {
        return this._acked[n % RING] === n;
    }
}
