import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { ConfigParams, Descriptor, References } from 'pip-services3-commons-nodex';
import { CredentialParams, ConnectionParams, type ICredentialStore, MemoryDiscovery } from 'pip-services3-components-nodex';

import { MqttConnection, MqttErrorCode } from '../../src';
import { type AedesTestBroker, refusedPort, silentServer, startAedes } from '../helpers/brokers';
import { newConnection, RecordingListener, testReferences } from '../helpers/components';

/** Exposes the fields the specification lists. */
class InspectableConnection extends MqttConnection {
    public fields(): Record<string, unknown> {
        return {
            clientId: this._clientId,
            retryConnect: this._retryConnect,
            connectTimeout: this._connectTimeout,
            reconnectTimeout: this._reconnectTimeout,
            keepAliveTimeout: this._keepAliveTimeout,
            options: this._options.getAsObject() as unknown,
        };
    }
}

/** A credential store that answers only when told to. */
class SlowCredentialStore implements ICredentialStore {
    public release!: () => void;
    private readonly _released = new Promise<void>((resolve) => { this.release = resolve; });
    public store(): Promise<void> { return Promise.resolve(); }
    public async lookup(): Promise<CredentialParams> {
        await this._released;
        return CredentialParams.fromTuples('username', 'u', 'password', 'p');
    }
}

describe('MqttConnection configuration and references', { timeout: 30000 }, () => {
    let broker: AedesTestBroker;
    before(async () => { broker = await startAedes(); });
    after(async () => { await broker.stop(); });

    it('sets the specified fields from configuration, with the documented defaults', () => {
        const connection = new InspectableConnection();
        connection.configure(new ConfigParams());
        const defaults = connection.fields();
        assert.match(String(defaults.clientId), /^[A-Za-z0-9]{1,11}[0-9a-f]{12}$/);
        assert.deepEqual({ ...defaults, clientId: undefined }, {
            clientId: undefined,
            retryConnect: true,
            connectTimeout: 30000,
            reconnectTimeout: 1000,
            keepAliveTimeout: 60000,
            options: {
                retry_connect: 'true', connect_timeout: '30000', reconnect_timeout: '1000', max_reconnect_timeout: '30000',
                keepalive_timeout: '60000', clean_session: 'true', max_offline_messages: '10000', protocol_version: '4',
                broker_assigns_client_id: 'false', topic_alias_maximum: '0', ssl_reject_unauthorized: 'true',
                max_qos: '2', will_qos: '0', will_retain: 'false',
            },
        });
        connection.configure(ConfigParams.fromTuples('client_id', 'c1', 'options.retry_connect', false,
            'options.connect_timeout', 1, 'options.reconnect_timeout', 2, 'options.keepalive_timeout', 3));
        assert.deepEqual({ ...connection.fields(), options: undefined }, {
            clientId: 'c1', retryConnect: false, connectTimeout: 1, reconnectTimeout: 2, keepAliveTimeout: 3, options: undefined,
        });
    });

    for (const retry of [true, false]) {
        it(`fails over to the next of connections.N when the first is down (retry_connect ${retry})`, async () => {
            const down = await refusedPort();
            const connection = new MqttConnection();
            connection.configure(ConfigParams.fromTuples(
                'connections.0.uri', `mqtt://127.0.0.1:${down}`,
                'connections.1.host', '127.0.0.1', 'connections.1.port', broker.port,
                'options.retry_connect', retry,
                'options.reconnect_timeout', 100, 'options.connect_timeout', 5000));
            await connection.open(null);
            try {
                assert.equal(connection.getConnection()!.options.port, broker.port);
                assert.equal(connection.getConnection()!.options.servers?.length, 2);
                const period = connection.getConnection()!.options.reconnectPeriod ?? -1;
                // Reaching the second server took one reconnect: the wait stays at that backoff step until the connection is stable.
                assert.ok(retry ? period >= 75 && period <= 200 : period === 0, `reconnect wait ${period}`);
            } finally {
                await connection.close(null);
            }
        });
    }

    it('fails over past a silent first server within connect_timeout', async () => {
        const silent = await silentServer();
        try {
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
        } finally {
            await silent.stop();
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

    it('resolves the broker through a referenced discovery service', async () => {
        const discovery = new MemoryDiscovery();
        await discovery.register(null as unknown as string, 'mqtt-broker', ConnectionParams.fromTuples('host', '127.0.0.1', 'port', broker.port));
        const connection = new MqttConnection();
        connection.configure(ConfigParams.fromTuples('connection.discovery_key', 'mqtt-broker'));
        connection.setReferences(References.fromTuples(new Descriptor('pip-services', 'discovery', 'memory', 'default', '1.0'), discovery));
        await connection.open(null);
        assert.equal(connection.isOpen(), true);
        await connection.close(null);
    });

    it('rejects open with MQTT_CLOSED when closed while resolving, and never connects', async () => {
        const store = new SlowCredentialStore();
        const connection = newConnection(broker.url, 'credential.store_key', 'k');
        connection.setReferences(References.fromTuples(new Descriptor('pip-services', 'credential-store', 'slow', 'default', '1.0'), store));
        const connections = broker.broker.connectionCount();
        const opening = connection.open(null);
        const closing = connection.close(null);
        store.release();
        await assert.rejects(opening, { code: MqttErrorCode.Closed });
        await closing;
        assert.equal(connection.isOpen(), false);
        assert.equal(broker.broker.connectionCount(), connections);
    });

    it('stops logging and counting after unsetReferences', async () => {
        const { references, logger, counters } = testReferences();
        const connection = newConnection(broker.url);
        connection.setReferences(references);
        await connection.open(null);
        const lines = logger.entries.length;
        assert.ok(lines > 0);
        connection.unsetReferences();
        await connection.publish('unset/refs', 'x');
        await connection.close(null);
        assert.equal(logger.entries.length, lines);
        assert.equal(counters.increments.get('mqtt.published_messages'), undefined);
    });

    it('uses the latest configuration when configured again, credentials included', async () => {
        const users: (string | undefined)[] = [];
        const auth = await startAedes({ authenticate: (_id, username) => { users.push(username); return true; } });
        const connection = new MqttConnection();
        try {
            connection.configure(ConfigParams.fromTuples('connection.uri', auth.url, 'credential.username', 'old'));
            await connection.open(null);
            await connection.close(null);
            connection.configure(ConfigParams.fromTuples('connection.uri', auth.url, 'credential.username', 'new'));
            await connection.open(null);
            assert.deepEqual(users, ['old', 'new']);
        } finally {
            await connection.close(null);
            await auth.stop();
        }
    });

    it('lists its subscriptions', async () => {
        const connection = newConnection(broker.url);
        await connection.open(null);
        try {
            const a = new RecordingListener();
            const b = new RecordingListener();
            await connection.subscribe('list/+/x', { qos: 1 }, a);
            await connection.subscribe('list/+/x', null, b);
            await connection.subscribe('$share/g/list/y', null, a);
            const subs = connection.getSubscriptions().map((s) => ({
                topic: s.topic, filter: s.filter, qos: s.qos, shared: s.isShared, wild: s.hasWildcards, mine: s.listener === a,
            }));
            assert.deepEqual(subs, [
                { topic: 'list/+/x', filter: 'list/+/x', qos: 1, shared: false, wild: true, mine: true },
                { topic: 'list/+/x', filter: 'list/+/x', qos: 0, shared: false, wild: true, mine: false },
                { topic: '$share/g/list/y', filter: 'list/y', qos: 0, shared: true, wild: false, mine: true },
            ]);
            assert.ok(Object.isFrozen(connection.getSubscriptions()[0].options));
        } finally {
            await connection.close(null);
        }
    });
});
