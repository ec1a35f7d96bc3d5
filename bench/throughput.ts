// Scenario 1: publish -> receive throughput on one topic, the same way for every variant: a
// publisher keeps `window` publishes in flight, a subscriber counts every message by its number.
import { randomBytes } from 'node:crypto';

import { openOursPair, openRawPair, type PubSubPair } from './pairs';
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



/** A numbered payload: the number in its first 4 bytes, random bytes after. */
function payloads(size: number): (i: number) => Buffer {
    const filler = randomBytes(Math.max(4, size));
    return (i) => {
        const payload = Buffer.from(filler);
        payload.writeUInt32BE(i, 0);
        return payload;
    };
}

async function measure(params: ThroughputParams, open: (topic: string, onMessage: (payload: Buffer) => void) => Promise<PubSubPair>): Promise<RunResult> {
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
        await pump(warm, params.window, (i) => endpoints.publish(make(i)));
        await warmed.promise;
        const cpu = process.cpuUsage();
        const started = process.hrtime.bigint();
        await pump(params.messages, params.window, (i) => endpoints.publish(make(warm + i)));
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
    return measure(params, (topic, onMessage) => openRawPair(params.url, topic, params.qos, onMessage));
}

/** This package: two MqttConnections, `publish()` and a listener. */
export function oursThroughput(params: ThroughputParams): Promise<RunResult> {
    return measure(params, (topic, onMessage) => openOursPair(params.url, topic, params.qos, onMessage));
}
