// Scenario 1: publish -> receive throughput on one topic, the same way for every variant: a
// publisher keeps `window` publishes in flight, a subscriber counts every message by its number.
import { randomBytes } from 'node:crypto';

import mqtt from 'mqtt';
import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection } from '../src';
import { pump, until, warmUpCount } from './pool';
import type { RunResult } from './worker';

/** What one measured run was asked to do. */
export interface ThroughputParams {
    readonly url: string;
    readonly messages: number;
    readonly payload: number;
    readonly qos: 0 | 1;
    /** Publishes in flight at a time. */
    readonly window: number;
}


/** A variant's publishing side, opened with its subscriber already subscribed. */
interface Endpoints {
    publish(topic: string, payload: Buffer, qos: 0 | 1): Promise<void>;
    close(): Promise<void>;
}

/** A numbered payload: the number in its first 4 bytes, random bytes after. */
function payloads(size: number): (i: number) => Buffer {
    const filler = randomBytes(Math.max(4, size));
    return (i) => {
        const payload = Buffer.from(filler);
        payload.writeUInt32BE(i, 0);
        return payload;
    };
}

async function measure(params: ThroughputParams, open: (topic: string, onMessage: (payload: Buffer) => void) => Promise<Endpoints>): Promise<RunResult> {
    const topic = `bench/throughput/${randomBytes(4).toString('hex')}`;
    const warm = warmUpCount(params.messages);
    const total = warm + params.messages;
    const seen = new Uint8Array(total);
    let received = 0;
    let duplicates = 0;
    const warmed = until(() => received >= warm, 120_000, `${warm} warm-up messages`);
    const all = until(() => received === total, 120_000, `${total} messages`);
    const endpoints = await open(topic, (payload) => {
        const i = payload.readUInt32BE(0);
        if (seen[i] === 1) duplicates++;
        else {
            seen[i] = 1;
            received++;
            warmed.poke();
            all.poke();
        }
    });
    try {
        const make = payloads(params.payload);
        await pump(warm, params.window, (i) => endpoints.publish(topic, make(i), params.qos));
        await warmed.promise;
        const cpu = process.cpuUsage();
        const started = process.hrtime.bigint();
        await pump(params.messages, params.window, (i) => endpoints.publish(topic, make(warm + i), params.qos));
        await all.promise;
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const used = process.cpuUsage(cpu);
        if (duplicates > 0 && params.qos === 0) throw new Error(`${duplicates} duplicates at QoS 0`);
        return {
            messages: params.messages,
            seconds,
            rate: params.messages / seconds,
            cpuPerMessageUs: (used.user + used.system) / params.messages,
        };
    } finally {
        await endpoints.close();
    }
}

/** Raw MQTT.js: two clients, `publishAsync` and the `message` event. */
export function rawThroughput(params: ThroughputParams): Promise<RunResult> {
    return measure(params, async (topic, onMessage) => {
        const sub = await mqtt.connectAsync(params.url, { reconnectPeriod: 0 });
        const pub = await mqtt.connectAsync(params.url, { reconnectPeriod: 0 });
        sub.on('message', (_topic, payload) => onMessage(payload));
        await sub.subscribeAsync(topic, { qos: params.qos });
        return {
            publish: async (t, payload, qos) => { await pub.publishAsync(t, payload, { qos }); },
            close: async () => { await Promise.all([pub.endAsync(), sub.endAsync()]); },
        };
    });
}

/** This package: two MqttConnections, `publish()` and a listener. */
export function oursThroughput(params: ThroughputParams): Promise<RunResult> {
    return measure(params, async (topic, onMessage) => {
        const config = ConfigParams.fromTuples('connection.uri', params.url);
        const sub = new MqttConnection();
        const pub = new MqttConnection();
        sub.configure(config);
        pub.configure(config);
        await Promise.all([sub.open(null), pub.open(null)]);
        await sub.subscribe(topic, { qos: params.qos }, { onMessage: (_topic, payload) => onMessage(payload) });
        return {
            publish: (t, payload, qos) => pub.publish(t, payload, { qos }),
            close: async () => { await Promise.all([pub.close(null), sub.close(null)]); },
        };
    });
}
