import assert from 'node:assert/strict';

import { ApplicationException, ConfigParams, Descriptor, References } from 'pip-services3-commons-nodex';
import { type CounterTiming, type ICounters, Logger, LogLevel } from 'pip-services3-components-nodex';
import { CounterTiming as Timing } from 'pip-services3-components-nodex';

import { randomBytes } from 'node:crypto';

import type { IPublishPacket } from 'mqtt';

import { MqttConnection, type IMqttMessageListener } from '../../src';
import { delay, waitFor } from './net';

/** One log line as the component wrote it. */
export interface LogEntry {
    level: LogLevel;
    correlationId: string | null;
    error: Error | null;
    message: string;
}

/** A logger that keeps every line, for assertions. */
export class CapturingLogger extends Logger {
    public readonly entries: LogEntry[] = [];

    public constructor() {
        super();
        this.setLevel(LogLevel.Trace);
    }

    protected write(level: LogLevel, correlationId: string, error: Error, message: string): void {
        this.entries.push({ level, correlationId, error: error ?? null, message });
    }

    /** Everything written, messages and error texts, as one string. */
    public text(): string {
        return this.entries.map((e) => `${e.message} ${e.error ? `${e.error.message} ${JSON.stringify(e.error)}` : ''}`).join('\n');
    }

    public messages(level?: LogLevel): string[] {
        return this.entries.filter((e) => level === undefined || e.level === level).map((e) => e.message);
    }
}

/** Counters that keep totals and timing counts, for assertions. */
export class RecordingCounters implements ICounters {
    public readonly increments = new Map<string, number>();
    public readonly timings = new Map<string, number>();

    public beginTiming(name: string): CounterTiming {
        return new Timing(name, this);
    }
    public endTiming(name: string, _elapsed: number): void {
        this.timings.set(name, (this.timings.get(name) ?? 0) + 1);
    }
    public stats(): void { /* not used */ }
    public last(): void { /* not used */ }
    public timestampNow(): void { /* not used */ }
    public timestamp(): void { /* not used */ }
    public incrementOne(name: string): void {
        this.increment(name, 1);
    }
    public increment(name: string, value: number): void {
        this.increments.set(name, (this.increments.get(name) ?? 0) + value);
    }
}

/** The error a promise rejects with: a Pip.Services exception (the assertion fails when it resolves or rejects otherwise). */
export async function rejection(promise: Promise<unknown>): Promise<ApplicationException> {
    try {
        await promise;
    } catch (err) {
        assert.ok(err instanceof ApplicationException, `a Pip.Services exception, not ${String(err)}`);
        return err;
    }
    assert.fail('expected a rejection');
}

/** References holding a capturing logger and recording counters. */
export function testReferences(): { references: References; logger: CapturingLogger; counters: RecordingCounters } {
    const logger = new CapturingLogger();
    const counters = new RecordingCounters();
    const references = References.fromTuples(
        new Descriptor('pip-services', 'logger', 'capture', 'default', '1.0'), logger,
        new Descriptor('pip-services', 'counters', 'recording', 'default', '1.0'), counters,
    );
    return { references, logger, counters };
}

/** A configured (not opened) connection to a broker url, with extra configuration tuples. */
export function newConnection(url: string, ...tuples: unknown[]): MqttConnection {
    const connection = new MqttConnection();
    connection.configure(ConfigParams.fromTuples('connection.uri', url, ...tuples));
    return connection;
}

/** A listener that records what it receives. */
export class RecordingListener implements IMqttMessageListener {
    public readonly received: { topic: string; data: Buffer; qos: number; retain: boolean; packet: IPublishPacket }[] = [];

    public onMessage(topic: string, data: Buffer, packet: IPublishPacket): void {
        this.received.push({ topic, data, qos: packet.qos, retain: packet.retain, packet });
    }

    public topics(): string[] {
        return this.received.map((r) => r.topic);
    }
}

/** A client id no other test uses: the prefix and 12 random hex digits (at most 23 characters with a short prefix). */
export function uniqueClientId(prefix: string): string {
    return `${prefix}${randomBytes(6).toString('hex')}`;
}

/**
 * Drops an open connection under its client, as a network fault would (MQTT.js then reconnects),
 * and waits until the client noticed and the broker had time to notice too, so what is published
 * next finds the subscriber gone.
 */
export async function dropConnection(connection: MqttConnection): Promise<void> {
    connection.getConnection()!.stream.destroy();
    await waitFor(() => !connection.isConnected(), 5000, 'the client to notice the loss');
    await delay(200);
}

/** The state of a promise, read later: 'pending', 'ok', or '<error code>: <message>'. */
export function settle(promise: Promise<void>): { state: string } {
    const result = { state: 'pending' };
    promise.then(() => { result.state = 'ok'; }, (err: Error & { code?: string }) => { result.state = `${err.code}: ${err.message}`; });
    return result;
}

/** Publishes from a separate connection and waits until the listener got it, or fails. */
export async function delivered(broker: { url: string }, topic: string, listener: RecordingListener, qos: 0 | 1 | 2 = 1): Promise<void> {
    const pub = newConnection(broker.url);
    await pub.open(null);
    try {
        const before = listener.received.length;
        await waitFor(async () => {
            await pub.publish(topic, 'ping', { qos });
            await new Promise((resolve) => setTimeout(resolve, 50));
            return listener.received.length > before;
        }, 5000, `delivery on ${topic}`);
    } finally {
        await pub.close(null);
    }
}
