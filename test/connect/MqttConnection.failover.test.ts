// Failover between the servers of connections.N: the next one is tried when one is down or silent.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection, MqttErrorCode } from '../../src';
import { type AedesTestBroker, refusedPort } from '../helpers/brokers';
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
});
