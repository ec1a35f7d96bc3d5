// Scenarios 2 and 3: one connection with S subscriptions (half exact filters, half `+`
// wildcards), then a stream of messages that each match one of them. Measures the subscribe
// time and memory per subscription, and the receive rate and CPU per message. The publisher is
// the same raw MQTT.js client for every variant, so only the receiving side differs.
import { randomBytes } from 'node:crypto';

import mqtt, { type MqttClient } from 'mqtt';
import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection } from '../src';
import { pump, until, warmUpCount } from './pool';
import { openPredecessorConnection, promised } from './predecessor';
import type { RunResult } from './worker';

export interface DispatchParams {
    readonly url: string;
    readonly subscriptions: number;
    readonly messages: number;
    readonly payload: number;
}

export interface DispatchResult extends RunResult {
    readonly messages: number;
    readonly subscribeSeconds: number;
    /** Heap growth per subscription after a full GC, in bytes (needs --expose-gc). */
    readonly heapPerSubscription: number | null;
}

/** The receiving side of a variant. */
interface Receiver {
    /** Subscribes a filter; `onMessage` is the count for the target filter, or a check that throws for the others. */
    subscribe(filter: string, onMessage: () => void, isTarget: boolean): Promise<void>;
    close(): Promise<void>;
}

function heapUsed(): number | null {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (!gc) return null;
    gc();
    gc();
    return process.memoryUsage().heapUsed;
}

async function measure(params: DispatchParams, receiver: Receiver): Promise<DispatchResult> {
    const base = `bench/dispatch/${randomBytes(4).toString('hex')}`;
    const filter = (i: number): string => (i % 2 === 0 ? `${base}/e/${i}` : `${base}/w/${i}/+`);
    // The messages match the last exact filter. (Not a wildcard one: the predecessor never
    // delivers to wildcard filters.) Every variant still holds all the wildcard filters.
    const target = params.subscriptions - 1 - ((params.subscriptions - 1) % 2);
    const topic = `${base}/e/${target}`;

    const warm = warmUpCount(params.messages);
    let received = 0;
    const warmed = until(() => received >= warm, 180_000, `${warm} warm-up messages`);
    const all = until(() => received === warm + params.messages, 180_000, `${warm + params.messages} messages`);
    const heapBefore = heapUsed();
    const subscribeStarted = process.hrtime.bigint();
    const count = (): void => {
        received++;
        warmed.poke();
        all.poke();
    };
    await pump(params.subscriptions, 500, (i) => receiver.subscribe(filter(i), i === target ? count : () => {
        throw new Error(`a message for ${topic} reached filter ${filter(i)}`);
    }, i === target));
    const subscribeSeconds = Number(process.hrtime.bigint() - subscribeStarted) / 1e9;
    const heapAfter = heapUsed();

    const pub: MqttClient = await mqtt.connectAsync(params.url, { reconnectPeriod: 0 });
    try {
        const payload = randomBytes(params.payload);
        await pump(warm, 100, async () => { await pub.publishAsync(topic, payload, { qos: 0 }); });
        await warmed.promise;
        const cpu = process.cpuUsage();
        const started = process.hrtime.bigint();
        await pump(params.messages, 100, async () => { await pub.publishAsync(topic, payload, { qos: 0 }); });
        await all.promise;
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const used = process.cpuUsage(cpu);
        return {
            messages: params.messages,
            rate: params.messages / seconds,
            cpuPerMessageUs: (used.user + used.system) / params.messages,
            subscribeSeconds,
            heapPerSubscription: heapBefore !== null && heapAfter !== null ? (heapAfter - heapBefore) / params.subscriptions : null,
        };
    } finally {
        await pub.endAsync();
        await receiver.close();
    }
}

/**
 * Raw MQTT.js: one SUBSCRIBE per filter and one `message` handler that counts; it does no
 * matching, which an application with many filters would have to add.
 */
export async function rawDispatch(params: DispatchParams): Promise<DispatchResult> {
    const client = await mqtt.connectAsync(params.url, { reconnectPeriod: 0 });
    // Raw MQTT.js has one handler for every message: the target filter's count.
    let counter: (() => void) | null = null;
    client.on('message', () => counter?.());
    return measure(params, {
        subscribe: async (filter, onMessage, isTarget) => {
            if (isTarget) counter = onMessage;
            await client.subscribeAsync(filter, { qos: 0 });
        },
        close: async () => { await client.endAsync(); },
    });
}

/** This package: one MqttConnection, one listener per filter, messages routed to the matching ones. */
export async function oursDispatch(params: DispatchParams): Promise<DispatchResult> {
    const connection = new MqttConnection();
    connection.configure(ConfigParams.fromTuples('connection.uri', params.url));
    await connection.open(null);
    return measure(params, {
        subscribe: (filter, onMessage) => connection.subscribe(filter, { qos: 0 }, { onMessage }),
        close: () => connection.close(null),
    });
}

/** The predecessor: one connection, one listener per filter (it compares each topic with every filter). */
export async function predecessorDispatch(params: DispatchParams): Promise<DispatchResult> {
    const connection = await openPredecessorConnection(params.url);
    // It matches every message against every subscription (some 100 msg/s at 100,000 on this
    // machine): fewer messages, at most 100,000,000 / subscriptions, keep a run within minutes.
    // The rate is per second either way.
    const messages = Math.min(params.messages, Math.max(500, Math.floor(100_000_000 / params.subscriptions)));
    return measure({ ...params, messages }, {
        subscribe: (filter, onMessage) => promised((cb) => connection.subscribe(filter, { qos: 0 }, { onMessage }, cb)),
        close: () => promised((cb) => connection.close(null as unknown as string, cb)),
    });
}
