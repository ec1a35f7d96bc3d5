// Scenario 5: round-trip latency at a fixed rate, QoS 1. Each message carries the time it was
// published; the subscriber (in the same process, so on the same clock) records how long it took.
import { randomBytes } from 'node:crypto';

import { openOursPair, openRawPair, type PubSubPair } from './pairs';
import { until, warmUpCount } from './pool';
import type { RunResult } from './worker';

export interface LatencyParams {
    readonly url: string;
    readonly messages: number;
    /** Messages per second, sent on a fixed schedule. */
    readonly rate: number;
    readonly payload: number;
}


function percentile(sorted: number[], p: number): number {
    return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function measure(params: LatencyParams, open: (topic: string, onPayload: (payload: Buffer) => void) => Promise<PubSubPair>): Promise<RunResult> {
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
            sends.push(pair.publish(payload));
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
    return measure(params, (topic, onPayload) => openRawPair(params.url, topic, 1, onPayload));
}

/** This package: two MqttConnections. */
export function oursLatency(params: LatencyParams): Promise<RunResult> {
    return measure(params, (topic, onPayload) => openOursPair(params.url, topic, 1, onPayload));
}
