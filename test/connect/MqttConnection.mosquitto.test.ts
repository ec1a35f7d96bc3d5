import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConnectionException, Descriptor, References } from 'pip-services3-commons-nodex';
import { CredentialParams, MemoryCredentialStore } from 'pip-services3-components-nodex';

import { MqttErrorCode } from '../../src';
import { mosquittoSkip, startMosquitto, uniqueTopic, waitFor } from '../helpers/brokers';
import { newConnection, RecordingListener, testReferences } from '../helpers/components';

describe('MqttConnection on Mosquitto', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    it('authenticates against a password file, and refuses bad credentials once with the reason code', async () => {
        const broker = await startMosquitto({ passwords: { alice: 'al1ce-pw', bob: 'b0b-pw' } });
        const { references, logger } = testReferences();
        try {
            const good = newConnection(broker.url, 'credential.username', 'alice', 'credential.password', 'al1ce-pw');
            good.setReferences(references);
            await good.open(null);
            await good.close(null);

            const store = new MemoryCredentialStore();
            await store.store(null as unknown as string, 'mqtt', CredentialParams.fromTuples('username', 'bob', 'password', 'b0b-pw'));
            const fromStore = newConnection(broker.url, 'credential.store_key', 'mqtt');
            fromStore.setReferences(References.fromTuples(
                new Descriptor('pip-services', 'credential-store', 'memory', 'default', '1.0'), store,
                new Descriptor('pip-services', 'logger', 'capture', 'default', '1.0'), logger,
            ));
            await fromStore.open(null);
            await fromStore.close(null);

            const bad = newConnection(broker.url, 'credential.username', 'alice', 'credential.password', 'wr0ng-pw',
                'options.reconnect_timeout', 50);
            bad.setReferences(references);
            await assert.rejects(bad.open(null), (err: ConnectionException) => {
                assert.ok(err instanceof ConnectionException);
                assert.equal(err.code, MqttErrorCode.ConnectRefused);
                // Mosquitto 2 answers a bad password with "not authorized" (5).
                assert.equal(err.details.getAsNullableInteger('reason_code'), 5);
                return true;
            });
            const anonymous = newConnection(broker.url);
            await assert.rejects(anonymous.open(null), { code: MqttErrorCode.ConnectRefused });

            const logged = logger.text();
            for (const secret of ['al1ce-pw', 'b0b-pw', 'wr0ng-pw']) assert.ok(!logged.includes(secret), `${secret} logged`);
        } finally {
            await broker.stop();
        }
    });

    it('splits a shared subscription between its group members', async () => {
        const broker = await startMosquitto();
        const a = newConnection(broker.url);
        const b = newConnection(broker.url);
        const pub = newConnection(broker.url);
        try {
            await Promise.all([a.open(null), b.open(null), pub.open(null)]);
            const base = uniqueTopic('jobs');
            const la = new RecordingListener();
            const lb = new RecordingListener();
            await a.subscribe(`$share/workers/${base}/+`, { qos: 1 }, la);
            await b.subscribe(`$share/workers/${base}/+`, { qos: 1 }, lb);
            const count = 40;
            for (let i = 0; i < count; i++) await pub.publish(`${base}/${i}`, String(i), { qos: 1 });
            await waitFor(() => la.received.length + lb.received.length === count, 10000, 'all jobs');
            assert.ok(la.received.length > 0 && lb.received.length > 0, `split ${la.received.length}/${lb.received.length}`);
            const all = [...la.received, ...lb.received].map((r) => Number(r.data.toString())).sort((x, y) => x - y);
            assert.deepEqual(all, Array.from({ length: count }, (_, i) => i), 'each job exactly once');
            assert.equal(a.getSubscriptions()[0].isShared, true);
            assert.equal(a.getSubscriptions()[0].filter, `${base}/+`);
        } finally {
            await Promise.all([a.close(null), b.close(null), pub.close(null)]);
            await broker.stop();
        }
    });

    it('comes back after Mosquitto is killed and started again on the same port', async () => {
        const broker = await startMosquitto();
        const sub = newConnection(broker.url, 'options.reconnect_timeout', 100);
        const pub = newConnection(broker.url, 'options.reconnect_timeout', 100);
        try {
            await sub.open(null);
            await pub.open(null);
            const topic = uniqueTopic('killed');
            const listener = new RecordingListener();
            await sub.subscribe(topic, { qos: 1 }, listener);
            await broker.kill('SIGKILL');
            await waitFor(() => sub.getConnection()?.connected === false, 5000, 'the loss to be seen');
            await broker.start();
            await waitFor(async () => {
                if (pub.getConnection()?.connected !== true) return false;
                await pub.publish(topic, 'back', { qos: 1 });
                return listener.received.length > 0;
            }, 15000, 'delivery after the restart');
        } finally {
            await sub.close(null);
            await pub.close(null);
            await broker.stop();
        }
    });
});
