// Scenario 4: message queue send -> receive. A sending queue keeps `window` sends in flight, a
// receiving queue (subscribed at open) listens; every message is counted by its number. The raw
// MQTT.js variant does the same job by hand (the same JSON envelope in envelope mode), as the
// floor to compare with.
import { randomBytes } from 'node:crypto';

import { ConfigParams } from 'pip-services3-commons-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';
import { MessageEnvelope as PredecessorEnvelope } from 'pip-services3-messaging-node';

import { MqttMessageQueue } from '../src';
import { openRawPair } from './pairs';
import { pump, until, warmUpCount } from './pool';
import { openPredecessorQueue, promised } from './predecessor';
import type { RunResult } from './worker';

export interface QueueParams {
    readonly url: string;
    readonly messages: number;
    /** Message body size in bytes. */
    readonly payload: number;
    /** True: the whole envelope as JSON; false: the body alone. */
    readonly serializeEnvelope: boolean;
    readonly window: number;
}

/** A variant: a way to send message `i`, with its receiver already listening. */
interface QueuePair {
    send(body: string): Promise<void>;
    close(): Promise<void>;
}

/** A message body: its number, a colon, and filler up to the size. */
function body(i: number, filler: string): string {
    return `${i}:${filler}`;
}

async function measure(params: QueueParams, open: (topic: string, onBody: (text: string) => void) => Promise<QueuePair>): Promise<RunResult> {
    const topic = `bench/queue/${randomBytes(4).toString('hex')}`;
    const filler = 'x'.repeat(Math.max(0, params.payload - 8));
    const warm = warmUpCount(params.messages);
    const total = warm + params.messages;
    const seen = new Uint8Array(total);
    let received = 0;
    const warmed = until(() => received >= warm, 120_000, `${warm} warm-up messages`);
    const all = until(() => received === total, 120_000, `${total} messages`);
    const pair = await open(topic, (text) => {
        const i = Number(text.substring(0, text.indexOf(':')));
        if (seen[i] === 0) {
            seen[i] = 1;
            received++;
            warmed.poke();
            all.poke();
        }
    });
    try {
        await pump(warm, params.window, (i) => pair.send(body(i, filler)));
        await warmed.promise;
        const cpu = process.cpuUsage();
        const started = process.hrtime.bigint();
        await pump(params.messages, params.window, (i) => pair.send(body(warm + i, filler)));
        await all.promise;
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const used = process.cpuUsage(cpu);
        return { rate: params.messages / seconds, cpuPerMessageUs: (used.user + used.system) / params.messages };
    } finally {
        await pair.close();
    }
}

/**
 * Raw MQTT.js doing the same job by hand, QoS 1: the body as the payload, or with
 * `serializeEnvelope` the same JSON envelope the queues send (encoded at send, parsed at receipt),
 * each message acknowledged once handled (in `handleMessage`), as the queue acknowledges after processing.
 */
export function rawQueue(params: QueueParams): Promise<RunResult> {
    const encode = (text: string): string => (params.serializeEnvelope
        ? JSON.stringify({
            message_id: randomBytes(16).toString('hex'), correlation_id: null, message_type: 'bench',
            sent_time: new Date().toISOString(), message: Buffer.from(text, 'utf8').toString('base64'),
        })
        : text);
    const decode = (payload: Buffer): string => (params.serializeEnvelope
        ? Buffer.from((JSON.parse(payload.toString('utf8')) as { message: string }).message, 'base64').toString('utf8')
        : payload.toString('utf8'));
    return measure(params, async (topic, onBody) => {
        const pair = await openRawPair(params.url, topic, 1, (payload) => onBody(decode(payload)), true);
        return { send: (text) => pair.publish(encode(text)), close: () => pair.close() };
    });
}

/** This package: two MqttMessageQueues, send() and listen(), acknowledging after processing (the default). */
export function oursQueue(params: QueueParams): Promise<RunResult> {
    return measure(params, async (topic, onBody) => {
        const make = (...tuples: unknown[]): MqttMessageQueue => {
            const queue = new MqttMessageQueue(topic);
            queue.configure(ConfigParams.fromTuples('connection.uri', params.url, 'options.qos', 1,
                'options.serialize_envelope', params.serializeEnvelope, ...tuples));
            return queue;
        };
        const sender = make();
        const receiver = make('options.autosubscribe', true);
        await Promise.all([sender.open(null), receiver.open(null)]);
        receiver.listen(null, {
            receiveMessage: (envelope) => {
                onBody(envelope.getMessageAsString());
                return Promise.resolve();
            },
        });
        return {
            send: (text) => sender.send(null, new MessageEnvelope(null as unknown as string, 'bench', text)),
            close: async () => {
                receiver.endListen(null);
                await Promise.all([sender.close(null), receiver.close(null)]);
            },
        };
    });
}

/** The predecessor: two pip-services3-mqtt-node queues, send() and listen(). */
export function predecessorQueue(params: QueueParams): Promise<RunResult> {
    return measure(params, async (topic, onBody) => {
        // Its queues count as open only with autosubscribe (otherwise send() fails NOT_OPENED), so
        // the sender subscribes too and buffers its own messages.
        const options = ['options.qos', 1, 'options.serialize_envelope', params.serializeEnvelope, 'options.autosubscribe', true];
        const sender = await openPredecessorQueue(params.url, topic, ...options);
        const receiver = await openPredecessorQueue(params.url, topic, ...options);
        receiver.listen(null as unknown as string, {
            receiveMessage: (envelope, _queue, callback) => {
                onBody(envelope.getMessageAsString());
                callback(null);
            },
        });
        return {
            send: (text) => promised((cb) => sender.send(null as unknown as string, new PredecessorEnvelope(null as unknown as string, 'bench', text), cb)),
            close: async () => {
                receiver.endListen(null as unknown as string);
                await promised((cb) => sender.close(null as unknown as string, cb));
                await promised((cb) => receiver.close(null as unknown as string, cb));
            },
        };
    });
}
