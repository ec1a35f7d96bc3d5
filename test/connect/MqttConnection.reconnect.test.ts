import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConnectionException } from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';

import { MqttErrorCode } from '../../src';
import { mosquittoSkip, startAedes, startMosquitto, type TestBroker, uniqueTopic, waitFor } from '../helpers/brokers';
import { newConnection, RecordingListener, testReferences } from '../helpers/components';

const brokers: { kind: string; skip: string | false; start: () => Promise<TestBroker> }[] = [
    { kind: 'aedes', skip: false, start: () => startAedes() },
    { kind: 'mosquitto', skip: mosquittoSkip(), start: () => startMosquitto() },
];

for (const { kind, skip, start } of brokers) {
    describe(`MqttConnection after a broker restart (${kind})`, { skip, timeout: 60000 }, () => {
        it('reconnects and its subscriptions work again', async () => {
            const broker = await start();
            const { references, logger } = testReferences();
            const sub = newConnection(broker.url, 'options.reconnect_timeout', 100);
            sub.setReferences(references);
            const pub = newConnection(broker.url, 'options.reconnect_timeout', 100);
            try {
                await sub.open(null);
                await pub.open(null);
                const base = uniqueTopic('restart');
                const exact = new RecordingListener();
                const wild = new RecordingListener();
                await sub.subscribe(`${base}/exact`, { qos: 1 }, exact);
                await sub.subscribe(`${base}/+/deep/#`, { qos: 0 }, wild);

                await broker.restart();
                await waitFor(() => sub.getConnection()?.connected === true && pub.getConnection()?.connected === true,
                    10000, 'both connections to come back');
                assert.equal(sub.isOpen(), true);

                // The broker lost every session: the connection subscribed again by itself.
                await waitFor(async () => {
                    await pub.publish(`${base}/exact`, 'after', { qos: 1 });
                    return exact.received.length > 0;
                }, 10000, 'delivery on the exact filter after the restart');
                await pub.publish(`${base}/x/deep/er`, 'after', { qos: 1 });
                await waitFor(() => wild.received.length > 0, 5000, 'delivery on the wildcard filter after the restart');
                assert.equal(sub.getSubscriptions().length, 2);

                const messages = logger.messages().join('\n');
                assert.match(messages, /Connection to MQTT broker at mqtt:\/\/127\.0\.0\.1:\d+ lost; reconnecting in \d+ ms, then with backoff up to 30000 ms/);
                assert.match(messages, /Reconnected to MQTT broker/);
                assert.equal(logger.messages(LogLevel.Warn).filter((m) => /lost/.test(m)).length, 1, 'the loss is logged once');
            } finally {
                await sub.close(null);
                await pub.close(null);
                await broker.stop();
            }
        });

        it('does not reconnect when retry_connect is false, and says so', async () => {
            const broker = await start();
            const { references, logger } = testReferences();
            const connection = newConnection(broker.url, 'options.retry_connect', false);
            connection.setReferences(references);
            try {
                await connection.open(null);
                const listener = new RecordingListener();
                await connection.subscribe(uniqueTopic('noretry'), null, listener);
                await broker.restart();
                await waitFor(() => /not reconnecting because options\.retry_connect is false/.test(logger.text()), 10000, 'the log line');
                await new Promise((resolve) => setTimeout(resolve, 500));
                assert.equal(connection.getConnection()?.connected, false, 'still disconnected');
                assert.equal(connection.isOpen(), true, 'the component stays open until closed');
                await assert.rejects(connection.publish('x', 'y'), (err: ConnectionException) =>
                    err instanceof ConnectionException && err.code === MqttErrorCode.NotConnected);
                await assert.rejects(connection.subscribe('x', null, listener), { code: MqttErrorCode.NotConnected });
            } finally {
                await connection.close(null);
                await broker.stop();
            }
        });

        it('queues publishes while reconnecting and delivers them afterwards', async () => {
            const broker = await start();
            const sub = newConnection(broker.url, 'options.reconnect_timeout', 100);
            const pub = newConnection(broker.url, 'options.reconnect_timeout', 100);
            try {
                await sub.open(null);
                await pub.open(null);
                const topic = uniqueTopic('offline');
                const listener = new RecordingListener();
                await sub.subscribe(topic, { qos: 1 }, listener);
                await broker.stop();
                await waitFor(() => pub.getConnection()?.connected === false, 5000, 'the publisher to notice');
                // Retained, so the order in which the two clients come back does not matter.
                const publishing = pub.publish(topic, 'while-down', { qos: 1, retain: true });
                await broker.restart();
                await publishing;
                await waitFor(() => listener.received.length > 0, 10000, 'the queued message');
                assert.equal(listener.received[0].data.toString(), 'while-down');
                await pub.publish(topic, '', { qos: 1, retain: true });
            } finally {
                await sub.close(null);
                await pub.close(null);
                await broker.stop();
            }
        });
    });
}
