// Scenario 1: publish -> receive throughput on one topic, the same way for every variant: a
// publisher keeps at most `window` messages in flight end to end (published and not yet received,
// or not yet acknowledged), a subscriber counts every message by its number.
//
// End to end, not publish calls: a QoS 0 publish settles as soon as MQTT.js has written it, so a
// window of publish calls does not bound anything, the publisher floods the broker, and the rate
// measured is how the broker and the kernel buffer a backlog (it varied by 30% between runs of
// the same code), not what the client costs.
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
    /** Messages in flight at a time: published (or being published) and not yet received. */
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
    /** Resolves the wait of message i once it arrives. */
    const arrived: ((() => void) | undefined)[] = new Array<undefined>(total);
    let received = 0;
    let duplicates = 0;
    const all = until(() => received === total, 120_000, `${total} messages`);
    const endpoints = await open(topic, (payload) => {
        const i = payload.readUInt32BE(0);
        if (seen[i] === 1) duplicates++;
        else {
            seen[i] = 1;
            received++;
            arrived[i]?.();
            arrived[i] = undefined;
            all.poke();
        }
    });
    /** Publishes message i and waits until it is both published and received (a lost one times out in `all`). */
    const make = payloads(params.payload);
    const roundTrip = (i: number): Promise<void> => {
        const arrival = seen[i] === 1 ? Promise.resolve() : new Promise<void>((resolve) => { arrived[i] = resolve; });
        return Promise.all([endpoints.publish(make(i)), arrival]).then(() => undefined);
    };
    try {
        await Promise.race([pump(warm, params.window, roundTrip), all.promise]);
        const cpu = process.cpuUsage();
        const started = process.hrtime.bigint();
        await Promise.race([pump(params.messages, params.window, (i) => roundTrip(warm + i)), all.promise]);
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
