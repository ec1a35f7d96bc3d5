// Queue test helpers: an Aedes broker per describe (from suiteFixture) with cleanups after each test, shared connections, receivers.
import { afterEach, before } from 'node:test';

import { ConfigParams, Descriptor, References } from 'pip-services3-commons-nodex';
import type { IMessageQueue, IMessageReceiver, MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttConnection, MqttMessageQueue } from '../../src';
import type { AedesTestBroker } from './brokers';
import { testReferences } from './components';
import { suiteFixture } from './fixture';

export const CONNECTION = new Descriptor('pip-services', 'connection', 'mqtt', 'default', '1.0');
export const LOGGER = new Descriptor('pip-services', 'logger', 'capture', 'default', '1.0');
export const COUNTERS = new Descriptor('pip-services', 'counters', 'recording', 'default', '1.0');

/** Receives into an array, in order. */
export class CollectingReceiver implements IMessageReceiver {
    public readonly messages: MessageEnvelope[] = [];

    /** The messages as strings. */
    public get got(): string[] {
        return this.messages.map((m) => m.getMessageAsString());
    }

    public receiveMessage(envelope: MessageEnvelope, _queue: IMessageQueue): Promise<void> {
        this.messages.push(envelope);
        return Promise.resolve();
    }
}

/** Resolves to 'timeout' if `promise` has not settled within `ms`. */
export function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
        promise.finally(() => clearTimeout(timer)),
        new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), ms); }),
    ]);
}

/**
 * One embedded broker for a describe block, and cleanups run after each test (queues before
 * their connections). Call `QueueFixture.use()` inside the describe.
 */
export class QueueFixture {
    public broker!: AedesTestBroker;
    public readonly cleanup: (() => Promise<void>)[] = [];

    public static use(): QueueFixture {
        const fixture = new QueueFixture();
        const suite = suiteFixture();
        before(async () => { fixture.broker = await suite.aedes(); });
        afterEach(async () => {
            for (const c of fixture.cleanup.splice(0).reverse()) await c().catch(() => undefined);
        });
        return fixture;
    }

    /** A shared connection (not opened) and references holding it, a capturing logger and recording counters. */
    public shared(...connTuples: unknown[]) {
        const { logger, counters } = testReferences();
        const connection = new MqttConnection();
        connection.configure(ConfigParams.fromTuples('connection.uri', this.broker.url, 'options.reconnect_timeout', 100, ...connTuples));
        const references = References.fromTuples(LOGGER, logger, COUNTERS, counters, CONNECTION, connection);
        connection.setReferences(references);
        this.cleanup.push(() => connection.close(null));
        return { connection, references, logger, counters };
    }

    /** A queue named 'q' on `topic` with these references (closed after the test). */
    public queueOn(references: References, topic: string, ...tuples: unknown[]): MqttMessageQueue {
        const queue = new MqttMessageQueue('q');
        queue.configure(ConfigParams.fromTuples('topic', topic, ...tuples));
        queue.setReferences(references);
        this.cleanup.unshift(() => queue.close(null));
        return queue;
    }
}
