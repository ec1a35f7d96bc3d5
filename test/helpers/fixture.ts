// One fixture for what a test starts: brokers, proxies, scripted peers, connections and queues.
// Whatever it started is stopped or closed when the test ends (t.after), or when the describe
// block ends (after()), also when the test fails or times out: the latest first, each even when
// one before it fails.
import { after, type TestContext } from 'node:test';

import type { EmbeddedBrokerOptions } from '../../dev/EmbeddedBroker';
import type { MqttConnection } from '../../src';
import {
    type AedesTestBroker,
    type MosquittoBroker,
    type MosquittoOptions,
    mosquittoSkip,
    silentServer,
    startAedes,
    startMosquitto,
    type TestBroker,
} from './brokers';
import { newConnection } from './components';
import { FaultProxy } from './faultProxy';
import { type ScriptedHandler, startScriptedBroker } from './scriptedBroker';

/** The brokers a test can run on: the embedded Aedes always, Mosquitto when installed (see mosquittoSkip). */
export type BrokerKind = 'aedes' | 'mosquitto';

/** For `for (const { kind, skip } of EACH_BROKER) describe(..., { skip }, ...)`. */
export const EACH_BROKER: readonly { kind: BrokerKind; skip: string | false }[] = [
    { kind: 'aedes', skip: false },
    { kind: 'mosquitto', skip: mosquittoSkip() },
];

/** Anything with an asynchronous close, as Pip.Services components have. */
interface Closable {
    close(correlationId: string | null): Promise<void>;
}

export class Fixture {
    private readonly _cleanups: (() => unknown)[] = [];

    /** Runs `cleanup` when the fixture ends, before everything registered earlier. */
    public defer(cleanup: () => unknown): void {
        this._cleanups.push(cleanup);
    }

    /**
     * Runs the cleanups, the latest first. Each runs even when one before it failed; then the
     * first failure is thrown (all of them, in an AggregateError, when there are several).
     */
    public async cleanup(): Promise<void> {
        const errors: unknown[] = [];
        for (const cleanup of this._cleanups.splice(0).reverse()) {
            try {
                await cleanup();
            } catch (err) {
                errors.push(err);
            }
        }
        if (errors.length === 1) throw errors[0];
        if (errors.length > 1) throw new AggregateError(errors, `${errors.length} cleanups failed`);
    }

    /** An embedded Aedes broker on a free port, stopped at the end. */
    public async aedes(options?: EmbeddedBrokerOptions): Promise<AedesTestBroker> {
        const broker = await startAedes(options);
        this.defer(() => broker.stop());
        return broker;
    }

    /** A private Mosquitto on free ports, stopped and its folder removed at the end. */
    public async mosquitto(options?: MosquittoOptions): Promise<MosquittoBroker> {
        const broker = await startMosquitto(options);
        this.defer(() => broker.cleanup());
        return broker;
    }

    /** A broker of that kind with its default options. */
    public broker(kind: BrokerKind): Promise<TestBroker> {
        return kind === 'aedes' ? this.aedes() : this.mosquitto();
    }

    /** A fault proxy in front of host:port, stopped at the end. */
    public async proxy(host: string, port: number): Promise<FaultProxy> {
        const proxy = await FaultProxy.start(host, port);
        this.defer(() => proxy.stop());
        return proxy;
    }

    /** A scripted MQTT peer (see scriptedBroker.ts), stopped at the end. */
    public async scripted(handler: ScriptedHandler): Promise<{ url: string; stop(): Promise<void> }> {
        const broker = await startScriptedBroker(handler);
        this.defer(() => broker.stop());
        return broker;
    }

    /** A TCP server that never answers, stopped at the end. */
    public async silent(): Promise<{ url: string; port: number; stop(): Promise<void> }> {
        const server = await silentServer();
        this.defer(() => server.stop());
        return server;
    }

    /** A configured (not opened) connection to `url`, as newConnection makes it, closed at the end. */
    public connection(url: string, ...tuples: unknown[]): MqttConnection {
        return this.closing(newConnection(url, ...tuples));
    }

    /** Closes `component` (a connection, a queue) at the end, and returns it. */
    public closing<T extends Closable>(component: T): T {
        this.defer(() => component.close(null));
        return component;
    }
}

/** A fixture for one test: what it starts is cleaned up once the test ends (t.after). */
export function fixture(t: TestContext): Fixture {
    const f = new Fixture();
    t.after(() => f.cleanup());
    return f;
}

/** A fixture for a describe block, to call in its body: cleaned up after its last test (after()). */
export function suiteFixture(): Fixture {
    const f = new Fixture();
    after(() => f.cleanup());
    return f;
}
