import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { delay, mosquittoSkip, startAedes, startMosquitto, type TestBroker, uniqueTopic, waitFor } from '../helpers/brokers';
import { dropConnection, newConnection, RecordingListener, testReferences, uniqueClientId } from '../helpers/components';

const brokers: { kind: string; skip: string | false; start: () => Promise<TestBroker> }[] = [
    { kind: 'aedes', skip: false, start: () => startAedes() },
    { kind: 'mosquitto', skip: mosquittoSkip(), start: () => startMosquitto() },
];



function numbers(listener: RecordingListener): number[] {
    return listener.received.map((m) => Number(m.data.toString()));
}

for (const { kind, skip, start } of brokers) {
    describe(`MqttConnection sessions (${kind})`, { skip, timeout: 60000 }, () => {
        for (const clean of [false, true]) {
            it(`${clean ? 'loses' : 'keeps'} QoS 1 messages published while disconnected with clean_session ${clean}`, async () => {
                const broker = await start();
                const sub = newConnection(broker.url, 'client_id', uniqueClientId('persist'), 'options.clean_session', clean,
                    'options.reconnect_timeout', 1000);
                const pub = newConnection(broker.url);
                try {
                    await sub.open(null);
                    await pub.open(null);
                    const topic = uniqueTopic('session');
                    const marker = `${topic}/marker`;
                    const listener = new RecordingListener();
                    await sub.subscribe(topic, { qos: 1 }, listener);
                    await sub.subscribe(marker, { qos: 1 }, listener);

                    await dropConnection(sub);
                    for (let i = 1; i <= 20; i++) await pub.publish(topic, String(i), { qos: 1 });
                    await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
                    // The marker is published after the reconnect: once it is in, everything kept is in.
                    await waitFor(async () => {
                        await pub.publish(marker, '0', { qos: 1 });
                        return listener.topics().includes(marker);
                    }, 10000, 'the marker');
                    const kept = numbers(listener).filter((n) => n > 0);
                    assert.deepEqual(kept, clean ? [] : Array.from({ length: 20 }, (_, i) => i + 1));
                } finally {
                    await sub.close(null);
                    await pub.close(null);
                    await broker.stop();
                }
            });
        }

        it('hands a new process the messages its persistent session kept, when it subscribes again', async () => {
            const broker = await start();
            const id = uniqueClientId('persist');
            const first = newConnection(broker.url, 'client_id', id, 'options.clean_session', false);
            const pub = newConnection(broker.url);
            const { references, counters } = testReferences();
            const second = newConnection(broker.url, 'client_id', id, 'options.clean_session', false);
            second.setReferences(references);
            try {
                await first.open(null);
                await pub.open(null);
                const topic = uniqueTopic('restart');
                await first.subscribe(`${topic}/+`, { qos: 1 }, new RecordingListener());
                // The process goes away without unsubscribing: the broker keeps the session.
                await first.close(null);
                for (let i = 1; i <= 10; i++) await pub.publish(`${topic}/${i % 2 === 0 ? 'even' : 'odd'}`, String(i), { qos: 1 });

                await second.open(null);
                // The broker sends what it kept right after CONNACK, before anyone subscribes.
                await waitFor(() => (counters.increments.get('mqtt.received_messages') ?? 0) >= 10, 5000, 'the kept messages');
                const odd = new RecordingListener();
                const all = new RecordingListener();
                await second.subscribe(`${topic}/odd`, { qos: 1 }, odd);
                await second.subscribe(`${topic}/+`, { qos: 1 }, all);
                assert.deepEqual(numbers(odd), [1, 3, 5, 7, 9]);
                // Each held message goes to the first listener that matches it, once.
                assert.deepEqual(numbers(all), [2, 4, 6, 8, 10]);
                await pub.publish(`${topic}/odd`, '11', { qos: 1 });
                await waitFor(() => numbers(all).includes(11) && numbers(odd).includes(11), 5000, 'a live message to both');
            } finally {
                await first.close(null);
                await second.close(null);
                await pub.close(null);
                await broker.stop();
            }
        });

        it('holds at most max_offline_messages messages for listeners not subscribed yet, and says so once', async () => {
            const broker = await start();
            const id = uniqueClientId('persist');
            const first = newConnection(broker.url, 'client_id', id, 'options.clean_session', false);
            const pub = newConnection(broker.url);
            const { references, counters, logger } = testReferences();
            const second = newConnection(broker.url, 'client_id', id, 'options.clean_session', false, 'options.max_offline_messages', 3);
            second.setReferences(references);
            try {
                await first.open(null);
                await pub.open(null);
                const topic = uniqueTopic('hold-limit');
                await first.subscribe(topic, { qos: 1 }, new RecordingListener());
                await first.close(null);
                for (let i = 1; i <= 6; i++) await pub.publish(topic, String(i), { qos: 1 });
                await second.open(null);
                await waitFor(() => (counters.increments.get('mqtt.received_messages') ?? 0) >= 6, 5000, 'the kept messages');
                assert.equal(counters.increments.get('mqtt.dropped_messages'), 3);
                assert.equal(logger.messages().filter((m) => /no listener subscribes to/.test(m)).length, 1, 'one warning per burst');
                const listener = new RecordingListener();
                await second.subscribe(topic, { qos: 1 }, listener);
                assert.deepEqual(numbers(listener), [1, 2, 3]);
            } finally {
                await first.close(null);
                await second.close(null);
                await pub.close(null);
                await broker.stop();
            }
        });

        it('unsubscribes after the reconnect what was unsubscribed while a persistent session was disconnected', async () => {
            const broker = await start();
            const { references, counters } = testReferences();
            const sub = newConnection(broker.url, 'client_id', uniqueClientId('persist'), 'options.clean_session', false,
                'options.reconnect_timeout', 1000);
            sub.setReferences(references);
            const pub = newConnection(broker.url);
            try {
                await sub.open(null);
                await pub.open(null);
                const topic = uniqueTopic('unsub');
                const gone = new RecordingListener();
                const stays = new RecordingListener();
                await sub.subscribe(`${topic}/gone`, { qos: 1 }, gone);
                await sub.subscribe(`${topic}/stays`, { qos: 1 }, stays);
                await dropConnection(sub);
                // Returns at once: the UNSUBSCRIBE goes out after the reconnect.
                await sub.unsubscribe(`${topic}/gone`, gone);
                await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
                await waitFor(async () => {
                    await pub.publish(`${topic}/stays`, 'x', { qos: 1 });
                    return stays.received.length > 0;
                }, 10000, 'delivery on the kept filter');
                await delay(200);
                const before = counters.increments.get('mqtt.received_messages') ?? 0;
                await pub.publish(`${topic}/gone`, 'nobody', { qos: 1 });
                await pub.publish(`${topic}/stays`, 'last', { qos: 1 });
                await waitFor(() => stays.received.some((m) => m.data.toString() === 'last'), 5000, 'the last message');
                assert.equal(counters.increments.get('mqtt.received_messages'), before + 1, 'the broker no longer sends the dropped filter');
                assert.equal(gone.received.length, 0);
            } finally {
                await sub.close(null);
                await pub.close(null);
                await broker.stop();
            }
        });
    });
}
