import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigException, ConfigParams, Descriptor, References } from 'pip-services3-commons-nodex';
import { ConnectionParams, CredentialParams, CredentialResolver, MemoryCredentialStore, MemoryDiscovery } from 'pip-services3-components-nodex';

import { MqttConnectionResolver, MqttErrorCode } from '../../../src';

const STORE = new Descriptor('pip-services', 'credential-store', 'memory', 'default', '1.0');

async function resolve(...tuples: unknown[]) {
    const resolver = new MqttConnectionResolver();
    resolver.configure(ConfigParams.fromTuples(...tuples));
    return resolver.resolve(null);
}

async function rejects(code: string, key: string | null, ...tuples: unknown[]): Promise<void> {
    await assert.rejects(resolve(...tuples), (err: ConfigException) => {
        assert.ok(err instanceof ConfigException, `expected ConfigException, got ${String(err)}`);
        assert.equal(err.code, code);
        if (key != null) assert.equal(err.details.getAsNullableString('key'), key);
        return true;
    });
}

async function storeWith(key: string, ...tuples: unknown[]): Promise<MemoryCredentialStore> {
    const store = new MemoryCredentialStore();
    await store.store(null as unknown as string, key, CredentialParams.fromTuples(...tuples));
    return store;
}

describe('MqttConnectionResolver', () => {
    it('resolves host and port, with the default port by protocol', async () => {
        assert.deepEqual((await resolve('connection.host', 'broker', 'connection.port', 1999)).servers,
            [{ protocol: 'mqtt', host: 'broker', port: 1999 }]);
        const defaults = [['mqtt', 1883], ['tcp', 1883], ['mqtts', 8883], ['ssl', 8883], ['tls', 8883], ['ws', 80], ['wss', 443]] as const;
        for (const [protocol, port] of defaults) {
            const { servers } = await resolve('connection.protocol', protocol, 'connection.host', 'h');
            assert.equal(servers[0].port, port, protocol);
        }
        assert.equal((await resolve('connection.protocol', 'SSL', 'connection.host', 'h')).servers[0].protocol, 'mqtts');
        assert.equal((await resolve('connection.host', 'h')).servers[0].protocol, 'mqtt');
    });

    it('gives WebSocket connections a path, /mqtt by default', async () => {
        assert.equal((await resolve('connection.protocol', 'ws', 'connection.host', 'h')).servers[0].path, '/mqtt');
        assert.equal((await resolve('connection.uri', 'wss://h/ws')).servers[0].path, '/ws');
        assert.equal((await resolve('connection.protocol', 'ws', 'connection.host', 'h', 'connection.path', '/x')).servers[0].path, '/x');
        assert.equal((await resolve('connection.uri', 'mqtt://h/')).servers[0].path, undefined);
    });

    it('parses a uri with user info, IPv6 hosts and query parameters', async () => {
        const r = await resolve('connection.uri', 'mqtt://us%40er:p%3Ass@[::1]:1884?client_id=abc&connect_timeout=500');
        assert.deepEqual(r.servers, [{ protocol: 'mqtt', host: '::1', port: 1884 }]);
        assert.equal(r.username, 'us@er');
        assert.equal(r.password, 'p:ss');
        assert.equal(r.uriOptions.getAsString('client_id'), 'abc');
        assert.equal(r.uriOptions.getAsString('options.connect_timeout'), '500');
        assert.equal(r.displayUri, 'mqtt://[::1]:1884');
        assert.ok(!r.displayUri.includes('p:ss'));
        assert.equal((await resolve('connection.uri', 'tcp://h')).servers[0].port, 1883);
        assert.equal((await resolve('connection.uri', 'mqtt://h?clientId=x')).uriOptions.getAsString('client_id'), 'x');
        const resilience = await resolve('connection.uri',
            'mqtt://h?max_reconnect_timeout=9000&clean_session=false&max_offline_messages=5&protocol_version=5&session_expiry=60');
        assert.deepEqual(resilience.uriOptions.getAsObject(), {
            'options.max_reconnect_timeout': '9000', 'options.clean_session': 'false', 'options.max_offline_messages': '5',
            'options.protocol_version': '5', 'options.session_expiry': '60',
        });
        const v5 = await resolve('connection.uri',
            'mqtts://h?broker_assigns_client_id=true&topic_alias_maximum=8&ssl_server_name=broker.example.com&ssl_reject_unauthorized=false');
        assert.deepEqual(v5.uriOptions.getAsObject(), {
            'options.broker_assigns_client_id': 'true', 'options.topic_alias_maximum': '8',
            'options.ssl_server_name': 'broker.example.com', 'options.ssl_reject_unauthorized': 'false',
        });
    });

    it('an @ in a query value (a client id such as sensor@plant) is a legitimate uri', async () => {
        const resolver = new MqttConnectionResolver();
        resolver.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://broker:1883?client_id=sensor@plant-7'));
        const resolved = await resolver.resolve(null);
        assert.equal(resolved.uriOptions.getAsString('client_id'), 'sensor@plant-7');
    });

    it('turns connections.N into failover servers, in order', async () => {
        const r = await resolve(
            'connections.0.uri', 'mqtt://a:1001',
            'connections.1.host', 'b', 'connections.1.port', 1002,
            'connections.2.protocol', 'mqtts', 'connections.2.host', 'c',
        );
        assert.deepEqual(r.servers.map((s) => `${s.protocol}:${s.host}:${s.port}`), ['mqtt:a:1001', 'mqtt:b:1002', 'mqtts:c:8883']);
        assert.equal(r.displayUri, 'mqtt://a:1001,mqtt://b:1002,mqtts://c:8883');
        const ws = await resolve('connections.0.uri', 'ws://a/p', 'connections.1.uri', 'wss://b/p');
        assert.deepEqual(ws.servers.map((s) => s.path), ['/p', '/p']);
    });

    it('refuses failover servers that MQTT.js cannot share settings between', async () => {
        await rejects(MqttErrorCode.ConflictingConfig, 'connections.1', 'connections.0.uri', 'mqtt://a', 'connections.1.uri', 'ws://b');
        await rejects(MqttErrorCode.ConflictingConfig, 'connections.1.path', 'connections.0.uri', 'ws://a/x', 'connections.1.uri', 'ws://b/y');
    });

    it('names the configured key, also for sparse connections.N', async () => {
        await rejects(MqttErrorCode.BadPort, 'connections.7.port', 'connections.3.host', 'a', 'connections.7.host', 'b', 'connections.7.port', 'x');
        await rejects(MqttErrorCode.NoHost, 'connections.2.host', 'connection.host', 'a', 'connections.2.port', 1);
    });

    it('resolves connections through discovery', async () => {
        const discovery = new MemoryDiscovery();
        await discovery.register(null as unknown as string, 'broker-key', ConnectionParams.fromTuples('host', 'found', 'port', 2883));
        const resolver = new MqttConnectionResolver();
        resolver.configure(ConfigParams.fromTuples('connection.discovery_key', 'broker-key'));
        resolver.setReferences(References.fromTuples(new Descriptor('pip-services', 'discovery', 'memory', 'default', '1.0'), discovery));
        assert.deepEqual((await resolver.resolve(null)).servers, [{ protocol: 'mqtt', host: 'found', port: 2883 }]);

        const missing = new MqttConnectionResolver();
        missing.configure(ConfigParams.fromTuples('connection.discovery_key', 'other-key'));
        missing.setReferences(References.fromTuples(new Descriptor('pip-services', 'discovery', 'memory', 'default', '1.0'), discovery));
        await assert.rejects(missing.resolve(null), { code: MqttErrorCode.ResolveFailed });

        const noDiscovery = new MqttConnectionResolver();
        noDiscovery.configure(ConfigParams.fromTuples('connection.discovery_key', 'broker-key'));
        noDiscovery.setReferences(new References());
        await assert.rejects(noDiscovery.resolve(null), { code: MqttErrorCode.ResolveFailed });
    });

    it('rejects bad configuration with stable codes naming the key', async () => {
        await rejects(MqttErrorCode.NoConnection, 'connection');
        await rejects(MqttErrorCode.NoHost, 'connection.host', 'connection.port', 1883);
        await rejects(MqttErrorCode.NoHost, 'connections.1.host', 'connections.0.host', 'a', 'connections.1.port', 1);
        await rejects(MqttErrorCode.BadPort, 'connection.port', 'connection.host', 'h', 'connection.port', 'abc');
        await rejects(MqttErrorCode.BadPort, 'connection.port', 'connection.host', 'h', 'connection.port', 0);
        await rejects(MqttErrorCode.BadPort, 'connection.port', 'connection.host', 'h', 'connection.port', 65536);
        await rejects(MqttErrorCode.BadPort, 'connection.port', 'connection.host', 'h', 'connection.port', '1.5');
        await rejects(MqttErrorCode.UnknownProtocol, 'connection.protocol', 'connection.host', 'h', 'connection.protocol', 'http');
        await rejects(MqttErrorCode.UnknownProtocol, 'connection.uri', 'connection.uri', 'amqp://h');
        await rejects(MqttErrorCode.BadUri, 'connection.uri', 'connection.uri', 'not a uri');
        await rejects(MqttErrorCode.BadUri, 'connection.uri', 'connection.uri', 'mqtt://h?colour=red');
        await rejects(MqttErrorCode.BadUri, 'connection.uri', 'connection.uri', 'mqtt://user:pa%ZZss@h');
        await rejects(MqttErrorCode.NoHost, 'connection.uri', 'connection.uri', 'mqtt:///path');
    });

    it('never lets an explicit key silently override the uri', async () => {
        await rejects(MqttErrorCode.ConflictingConfig, 'connection.protocol', 'connection.uri', 'mqtt://h', 'connection.protocol', 'mqtts');
        await rejects(MqttErrorCode.ConflictingConfig, 'connection.host', 'connection.uri', 'mqtt://h', 'connection.host', 'other');
        await rejects(MqttErrorCode.ConflictingConfig, 'connection.port', 'connection.uri', 'mqtt://h:1', 'connection.port', 2);
        await rejects(MqttErrorCode.ConflictingConfig, 'connection.port', 'connection.uri', 'mqtt://h', 'connection.port', 1884);
        await rejects(MqttErrorCode.ConflictingConfig, 'credential.username', 'connection.uri', 'mqtt://a:b@h', 'credential.username', 'c');
        // Agreeing values are fine.
        const r = await resolve('connection.uri', 'tcp://h:1883', 'connection.protocol', 'mqtt', 'connection.host', 'h', 'connection.port', 1883);
        assert.deepEqual(r.servers, [{ protocol: 'mqtt', host: 'h', port: 1883 }]);
    });
});

describe('MqttConnectionResolver credentials', () => {
    it('takes credentials from config, or from a credential store', async () => {
        const plain = await resolve('connection.host', 'h', 'credential.username', 'u', 'credential.password', 'p');
        assert.equal(plain.username, 'u');
        assert.equal(plain.password, 'p');

        const store = new MemoryCredentialStore();
        await store.store(null as unknown as string, 'mqtt-key', CredentialParams.fromTuples('username', 'su', 'password', 'sp'));
        const resolver = new MqttConnectionResolver();
        resolver.configure(ConfigParams.fromTuples('connection.host', 'h', 'credential.store_key', 'mqtt-key'));
        resolver.setReferences(References.fromTuples(new Descriptor('pip-services', 'credential-store', 'memory', 'default', '1.0'), store));
        const fromStore = await resolver.resolve(null);
        assert.equal(fromStore.username, 'su');
        assert.equal(fromStore.password, 'sp');
    });

    it('fails when a credential store_key cannot be resolved', async () => {
        await rejects(MqttErrorCode.ResolveFailed, 'credential.store_key', 'connection.host', 'h', 'credential.store_key', 'k');
    });

    it('refuses a configured value that differs from the credential store, naming the key and not the values', async () => {
        const store = await storeWith('mqtt', 'username', 'svc', 'password', 'st0red-pw');
        const resolver = new MqttConnectionResolver();
        resolver.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://localhost:1883',
            'credential.store_key', 'mqtt', 'credential.password', 'c0nfig-pw'));
        resolver.setReferences(References.fromTuples(STORE, store));
        await assert.rejects(resolver.resolve(null), (err: ConfigException) => {
            assert.ok(err instanceof ConfigException);
            assert.equal(err.code, MqttErrorCode.ConflictingConfig);
            assert.equal(err.details.getAsString('key'), 'credential.password');
            assert.ok(!err.message.includes('st0red-pw') && !err.message.includes('c0nfig-pw'), err.message);
            return true;
        });
        // The same value in both places is no conflict.
        resolver.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://localhost:1883',
            'credential.store_key', 'mqtt', 'credential.password', 'st0red-pw'));
        resolver.setReferences(References.fromTuples(STORE, store));
        const resolved = await resolver.resolve(null);
        assert.equal(resolved.username, 'svc');
        assert.equal(resolved.password, 'st0red-pw');
    });

    it('completes a credentials.0 store credential with the keys configured beside its store_key', async () => {
        const store = new MemoryCredentialStore();
        await store.store(null as unknown as string, 'mqtt', CredentialParams.fromTuples('password', 'pw'));
        const resolver = new MqttConnectionResolver();
        resolver.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://127.0.0.1:1883',
            'credentials.0.store_key', 'mqtt', 'credentials.0.username', 'svc'));
        resolver.setReferences(References.fromTuples(STORE, store));
        const resolved = await resolver.resolve(null);
        assert.equal(resolved.password, 'pw');
        assert.equal(resolved.username, 'svc');
    });

    it('with both credential and credentials.N configured, the credential Pip.Services would choose', async () => {
        const config = ConfigParams.fromTuples('connection.host', 'h',
            'credential.username', 'old-user', 'credential.password', 'old-pass',
            'credentials.0.username', 'new-user', 'credentials.0.password', 'new-pass');
        const pip = await new CredentialResolver(config).lookup(null as unknown as string);
        const resolver = new MqttConnectionResolver();
        resolver.configure(config);
        const resolved = await resolver.resolve(null);
        assert.equal(resolved.username, pip?.getUsername());
    });

    it('does not take the user name for the host when the password holds an unencoded # or /', async () => {
        for (const uri of ['mqtt://svc:#Spr1ng@127.0.0.1:1883', 'mqtt://svc:12/Spr1ng@127.0.0.1:1883']) {
            const resolver = new MqttConnectionResolver();
            resolver.configure(ConfigParams.fromTuples('connection.uri', uri));
            const resolved = await resolver.resolve(null).catch((e: ConfigException) => e);
            if (resolved instanceof ConfigException) {
                assert.equal(resolved.code, MqttErrorCode.BadUri);
                continue;
            }
            assert.equal(resolved.servers[0].host, '127.0.0.1', `${uri} resolved to ${resolved.displayUri}`);
        }
    });

    it('never puts a password in an error message', async () => {
        await assert.rejects(resolve('connection.uri', 'mqtt://user:s3cret-pw@h', 'credential.password', 'other-pw'), (err: Error) => {
            assert.ok(!err.message.includes('s3cret-pw'));
            assert.ok(!err.message.includes('other-pw'));
            assert.ok(!JSON.stringify(err).includes('s3cret-pw'));
            return true;
        });
    });
});
