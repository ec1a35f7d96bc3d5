// Failover between the servers of connections.N: the next one is tried when one is down or silent,
// and after a loss the attempts start again at the first (the order the user gave).
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection, MqttErrorCode } from '../../src';
import { type AedesTestBroker, refusedPort, waitFor } from '../helpers/brokers';
import { dropConnection } from '../helpers/components';
import { fixture, suiteFixture } from '../helpers/fixture';

describe('MqttConnection failover', { timeout: 30000 }, () => {
    const suite = suiteFixture();
    let broker: AedesTestBroker;
    before(async () => { broker = await suite.aedes(); });

    for (const retry of [true, false]) {
        it(`fails over to the next of connections.N when the first is down (retry_connect ${retry})`, async (t) => {
            const f = fixture(t);
            const down = await refusedPort();
            const connection = f.closing(new MqttConnection());
            connection.configure(ConfigParams.fromTuples(
                'connections.0.uri', `mqtt://127.0.0.1:${down}`,
                'connections.1.host', '127.0.0.1', 'connections.1.port', broker.port,
                'options.retry_connect', retry,
                'options.reconnect_timeout', 100, 'options.connect_timeout', 5000));
            await connection.open(null);
            assert.equal(connection.getConnection()!.options.port, broker.port);
            assert.equal(connection.getConnection()!.options.servers?.length, 2);
            const period = connection.getConnection()!.options.reconnectPeriod ?? -1;
            // Reaching the second server took one reconnect: the wait stays at that backoff step until the connection is stable.
            assert.ok(retry ? period >= 75 && period <= 200 : period === 0, `reconnect wait ${period}`);
        });
    }

    it('fails over past a silent first server within connect_timeout', async (t) => {
        const f = fixture(t);
        const silent = await f.silent();
        for (const retry of [true, false]) {
            const connection = new MqttConnection();
            connection.configure(ConfigParams.fromTuples(
                'connections.0.uri', silent.url,
                'connections.1.uri', broker.url,
                'options.retry_connect', retry, 'options.reconnect_timeout', 50, 'options.connect_timeout', 4000));
            await connection.open(null);
            assert.equal(connection.getConnection()!.options.port, broker.port);
            assert.equal(connection.getConnection()!.options.connectTimeout, 2000, 'each of two servers gets half');
            await connection.close(null);
        }
    });

    it('without retry_connect, tries each failover server once and then fails', async () => {
        const connection = new MqttConnection();
        connection.configure(ConfigParams.fromTuples(
            'connections.0.uri', `mqtt://127.0.0.1:${await refusedPort()}`,
            'connections.1.uri', `mqtt://127.0.0.1:${await refusedPort()}`,
            'options.retry_connect', false, 'options.reconnect_timeout', 50, 'options.connect_timeout', 20000));
        const started = Date.now();
        await assert.rejects(connection.open(null), { code: MqttErrorCode.ConnectFailed });
        assert.ok(Date.now() - started < 5000, 'does not wait for connect_timeout');
    });

    /** An open connection over `urls` in that order (connections.1-N), reconnecting quickly. */
    async function overServers(f: ReturnType<typeof fixture>, urls: string[]): Promise<MqttConnection> {
        const connection = f.closing(new MqttConnection());
        connection.configure(ConfigParams.fromTuples(...urls.flatMap((url, i) => [`connections.${i + 1}.uri`, url]),
            'options.reconnect_timeout', 50, 'options.max_reconnect_timeout', 200, 'options.connect_timeout', 6000));
        await connection.open(null);
        return connection;
    }

    it('after losing the connection to connections.1, reconnects to connections.1, not to the next server', async (t) => {
        const f = fixture(t);
        const second = await f.aedes();
        const connection = await overServers(f, [broker.url, second.url]);
        assert.equal(connection.getConnection()!.options.port, broker.port);
        for (let loss = 1; loss <= 3; loss++) {
            await dropConnection(connection);
            await waitFor(() => connection.isConnected(), 10000, `the reconnect after loss ${loss}`);
            assert.equal(connection.getConnection()!.options.port, broker.port, `loss ${loss}: back on connections.1`);
        }
    });

    it('moves on to the next server while the first is down, and starts at the first again after the next loss', async (t) => {
        const f = fixture(t);
        const first = await f.aedes();
        const second = await f.aedes();
        const third = await f.aedes();
        const connection = await overServers(f, [first.url, second.url, third.url]);
        await first.stop();
        await waitFor(() => !connection.isConnected(), 5000, 'the loss of connections.1');
        await waitFor(() => connection.isConnected(), 10000, 'a connection to another server');
        assert.equal(connection.getConnection()!.options.port, second.port, 'connections.2 is next after connections.1');
        await first.restart();
        await dropConnection(connection);
        await waitFor(() => connection.isConnected(), 10000, 'the reconnect');
        assert.equal(connection.getConnection()!.options.port, first.port, 'back on connections.1 once it is up again');
    });

    it('after open(), gives a server that accepted the connection the whole connect_timeout to answer, not its share', async (t) => {
        // A busy broker (a NATS node while its cluster elects a leader) accepts at once and answers
        // the CONNECT seconds later. With two servers and connect_timeout 4000 each attempt gets 2000 ms;
        // here the answer comes after 3500 ms, so only the whole connect_timeout reaches it (and only a watchdog that knows it).
        const f = fixture(t);
        let connackDelay = 0;
        const slow = await f.scripted((packet, send) => {
            if (packet.cmd !== 'connect') return;
            setTimeout(() => send({ cmd: 'connack', sessionPresent: false, returnCode: 0 }), connackDelay);
        });
        const connection = f.closing(new MqttConnection());
        connection.configure(ConfigParams.fromTuples('connections.1.uri', slow.url, 'connections.2.uri', `mqtt://127.0.0.1:${await refusedPort()}`,
            'options.reconnect_timeout', 50, 'options.max_reconnect_timeout', 200, 'options.connect_timeout', 4000));
        await connection.open(null);
        assert.equal(connection.getConnection()!.options.connectTimeout, 2000, 'open() gives each of two servers half');
        connackDelay = 3500;
        await dropConnection(connection);
        await waitFor(() => connection.isConnected(), 15000, 'the reconnect to the slow server');
    });
});
