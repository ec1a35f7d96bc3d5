// Reconnect backoff: waits that double from reconnect_timeout up to max_reconnect_timeout, and start over once a connection is stable.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';

import { delay, waitFor } from '../helpers/brokers';
import { testReferences, uniqueClientId } from '../helpers/components';
import { fixture } from '../helpers/fixture';

describe('MqttConnection reconnect backoff', { timeout: 60000 }, () => {
    it('spaces attempts from reconnect_timeout, doubling up to max_reconnect_timeout, and starts over once a connection is stable', async (t) => {
        const f = fixture(t);
        const aedes = await f.aedes();
        const proxy = await f.proxy(aedes.host, aedes.port);
        const base = 200;
        const max = 1600;
        const connection = f.connection(proxy.url, 'options.reconnect_timeout', base, 'options.max_reconnect_timeout', max);
        /** Checks the waits before each attempt: each within 75..100% of its nominal wait, plus generous slack. */
        const checkWaits = (waits: number[], nominal: number[]): void => {
            const report = waits.map((w, i) => `${Math.round(w)} (nominal ${nominal[i]})`).join(', ');
            for (let i = 0; i < nominal.length; i++) {
                assert.ok(waits[i] >= nominal[i] * 0.75 - 20 && waits[i] <= nominal[i] + 1000, `wait ${i}: ${report}`);
            }
        };
        /** Refuses new connections, cuts the current one, and returns the waits before the next `count` attempts. */
        const lossWaits = async (count: number): Promise<number[]> => {
            proxy.refuse();
            const before = proxy.attempts().length;
            const lost = performance.now();
            proxy.cutAll();
            await waitFor(() => proxy.attempts().length >= before + count, 20000, `${count} attempts after the loss`);
            const times = [lost, ...proxy.attempts().slice(before, before + count)];
            return times.slice(1).map((time, i) => time - times[i]);
        };
        f.defer(() => proxy.accept());
        await connection.open(null);
        const waits = await lossWaits(6);
        checkWaits(waits, [200, 400, 800, 1600, 1600, 1600]);
        // The lower bounds of the nominal waits prove the doubling, whatever the slack above.
        assert.ok(waits[3] >= 0.75 * 1600 - 20);

        // Accepted and dropped at once (another client with the same id, say): the backoff goes on.
        proxy.accept();
        await waitFor(() => connection.isConnected(), 10000, 'the reconnect');
        const flapping = await lossWaits(1);
        checkWaits(flapping, [1600]);

        // Up for longer than the stable time (max_reconnect_timeout here): the backoff starts over.
        proxy.accept();
        await waitFor(() => connection.isConnected(), 10000, 'the reconnect');
        await delay(max + 500);
        checkWaits(await lossWaits(2), [200, 400]);
    });

    it('keeps backing off when two connections with one client id take turns kicking each other out', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const id = uniqueClientId('edge');
        const { references, counters } = testReferences();
        const a = f.connection(broker.url, 'client_id', id, 'options.clean_session', false, 'options.reconnect_timeout', 100);
        const b = f.connection(broker.url, 'client_id', id, 'options.clean_session', false, 'options.reconnect_timeout', 100);
        a.setReferences(references);
        await a.open(null);
        await b.open(null);
        await delay(6000);
        const losses = counters.increments.get('mqtt.connection_losses') ?? 0;
        // At the first wait (about 100 ms) it would be some 50; backing off, a handful.
        assert.ok(losses < 10, `${losses} losses in 6 s`);
    });
});
