// Scenario 5: round-trip latency at a fixed rate, QoS 1. Each message carries the time it was
// published; the subscriber (in the same process, so on the same clock) records how long it took.
import { randomBytes } from 'node:crypto';

import mqtt from 'mqtt';
import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection } from '../src';
import { until, warmUpCount } from './pool';
import type { RunResult } from './worker';

export interface LatencyParams {
    readonly url: string;
    readonly messages: number;
    /** Messages per second, sent on a fixed schedule. */
    readonly rate: number;
    readonly payload: number;
}

/** A variant: publish one payload, with the subscriber already listening. */
interface LatencyPair {
    publish(topic: string, payload: Buffer): Promise<void>;
    close(): Promise<void>;
}

function percentile(sorted: number[], p: number): number {
    return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function measure(params: LatencyParams, open: (topic: string, onPayload: (payload: Buffer) => void) => Promise<LatencyPair>): Promise<RunResult> {
    const topic = `bench/latency/${randomBytes(4).toString('hex')}`;
    const warm = warmUpCount(params.messages);
    const latencies: number[] = [];
    let received = 0;
    const all = until(() => received === warm + params.messages, 120_000, `${warm + params.messages} messages`);
    const pair = await open(topic, (payload) => {
        // The warm-up messages (numbered below `warm`) are not timed.
        if (payload.readUInt32BE(8) >= warm) latencies.push(Number(process.hrtime.bigint() - payload.readBigUInt64BE(0)) / 1e6);
        received++;
        all.poke();
    });
    try {
        const template = randomBytes(Math.max(12, params.payload));
        const interval = 1000 / params.rate;
        const cpu = process.cpuUsage();
        const started = performance.now();
        const sends: Promise<void>[] = [];
        for (let i = 0; i < warm + params.messages; i++) {
            // On schedule: wait for the i-th slot, however long the previous publish took.
            const wait = started + i * interval - performance.now();
            if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
            const payload = Buffer.from(template);
            payload.writeBigUInt64BE(process.hrtime.bigint(), 0);
            payload.writeUInt32BE(i, 8);
            sends.push(pair.publish(topic, payload));
        }
        await Promise.all(sends);
        await all.promise;
        const used = process.cpuUsage(cpu);
        const sorted = [...latencies].sort((a, b) => a - b);
        return {
            rate: params.rate,
            cpuPerMessageUs: (used.user + used.system) / (warm + params.messages),
            p50Ms: percentile(sorted, 0.5),
            p99Ms: percentile(sorted, 0.99),
            maxMs: sorted[sorted.length - 1],
        };
    } finally {
        await pair.close();
    }
}

/** Raw MQTT.js: two clients. */
export function rawLatency(params: LatencyParams): Promise<RunResult> {
    return measure(params, async (topic, onPayload) => {
        const sub = await mqtt.connectAsync(params.url, { reconnectPeriod: 0 });
        const pub = await mqtt.connectAsync(params.url, { reconnectPeriod: 0 });
        sub.on('message', (_topic, payload) => onPayload(payload));
        await sub.subscribeAsync(topic, { qos: 1 });
        return {
            publish: async (t, payload) => { await pub.publishAsync(t, payload, { qos: 1 }); },
            close: async () => { await Promise.all([pub.endAsync(), sub.endAsync()]); },
        };
    });
}

/** This package: two MqttConnections. */
export function oursLatency(params: LatencyParams): Promise<RunResult> {
    return measure(params, async (topic, onPayload) => {
        const config = ConfigParams.fromTuples('connection.uri', params.url);
        const sub = new MqttConnection();
        const pub = new MqttConnection();
        sub.configure(config);
        pub.configure(config);
        await Promise.all([sub.open(null), pub.open(null)]);
        await sub.subscribe(topic, { qos: 1 }, { onMessage: (_topic, payload) => onPayload(payload) });
        return {
            publish: (t, payload) => pub.publish(t, payload, { qos: 1 }),
            close: async () => { await Promise.all([pub.close(null), sub.close(null)]); },
        };
    });
}
