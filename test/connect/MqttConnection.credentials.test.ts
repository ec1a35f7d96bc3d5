// Credentials: from configuration, the uri or a credential store; refused ones fail open() once; no password is ever shown.
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { describe, it } from 'node:test';

import { ConfigParams, ConnectionException, Descriptor, References } from 'pip-services3-commons-nodex';
import { CredentialParams, MemoryCredentialStore } from 'pip-services3-components-nodex';

import { MqttConnection, MqttErrorCode, MqttMessageQueue, MqttMessageQueueFactory } from '../../src';
import { delay, mosquittoSkip, startAedes } from '../helpers/brokers';
import { type CapturingLogger, newConnection, testReferences } from '../helpers/components';
import { fixture } from '../helpers/fixture';

const STORE = new Descriptor('pip-services', 'credential-store', 'memory', 'default', '1.0');

/** An Aedes broker that accepts the given users (name, password, ...) and counts every CONNECT it sees. */
async function brokerWithUser(...users: string[]): Promise<{ url: string; attempts: () => number; stop(): Promise<void> }> {
    let attempts = 0;
    const broker = await startAedes({
        authenticate: (_clientId, user, pass) => {
            attempts++;
            const i = users.findIndex((name, j) => j % 2 === 0 && name === user);
            return i >= 0 && pass?.toString() === users[i + 1];
        },
    });
    return { url: broker.url, attempts: () => attempts, stop: () => broker.stop() };
}

async function storeWith(key: string, ...tuples: unknown[]): Promise<MemoryCredentialStore> {
    const store = new MemoryCredentialStore();
    await store.store(null as unknown as string, key, CredentialParams.fromTuples(...tuples));
    return store;
}

/** Everything a user could see of the components and errors: logs, messages, JSON, toString, inspect. */
function everythingShown(logger: CapturingLogger, errors: unknown[], components: (MqttConnection | MqttMessageQueue)[]): string {
    const parts = [logger.text(), logger.entries.map((e) => e.error?.stack ?? '').join('\n')];
    for (const err of errors) parts.push(String(err), JSON.stringify(err), inspect(err, { depth: 10 }));
    for (const component of components) parts.push(component.toString(), JSON.stringify(component), inspect(component, { depth: 10 }));
    return parts.join('\n');
}

describe('MqttConnection credentials', { timeout: 60000 }, () => {
    it('takes the password from a credential store and the user name configured beside store_key', async (t) => {
        const f = fixture(t);
        const broker = await brokerWithUser('svc', 'st0red-pw');
        f.defer(() => broker.stop());
        const store = await storeWith('mqtt', 'password', 'st0red-pw');
        const connection = f.closing(new MqttConnection());
        connection.configure(ConfigParams.fromTuples('connection.uri', broker.url,
            'credential.store_key', 'mqtt', 'credential.username', 'svc'));
        connection.setReferences(References.fromTuples(STORE, store));
        await connection.open(null);
        assert.equal(connection.isConnected(), true);
    });

    it('fails open() once on bad credentials: one CONNECT, one ConnectionException with the reason code, no retries', async (t) => {
        const f = fixture(t);
        const broker = await brokerWithUser('svc', 'g00d-pw');
        f.defer(() => broker.stop());
        const connection = f.closing(new MqttConnection());
        connection.configure(ConfigParams.fromTuples('connection.uri', broker.url,
            'credential.username', 'svc', 'credential.password', 'wr0ng-pw',
            'options.retry_connect', true, 'options.reconnect_timeout', 20, 'options.connect_timeout', 20000));
        const { references, logger } = testReferences();
        connection.setReferences(references);
        const started = Date.now();
        await assert.rejects(connection.open(null), (err: ConnectionException) => {
            assert.ok(err instanceof ConnectionException);
            assert.equal(err.code, MqttErrorCode.ConnectRefused);
            // MQTT 3.1.1: 4 = bad user name or password.
            assert.equal(err.details.getAsNullableInteger('reason_code'), 4);
            return true;
        });
        assert.ok(Date.now() - started < 10000, 'failed at the refusal, not at connect_timeout');
        // Several reconnect periods later, still only the one attempt.
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.equal(broker.attempts(), 1);
        assert.equal(connection.isOpen(), false);
        assert.equal(logger.entries.filter((e) => e.error != null).length, 1, 'one error logged');
    });

    it('rejects refused credentials at once with the reason code, without retrying', async (t) => {
        const f = fixture(t);
        const guarded = await f.aedes({ authenticate: (_id, user, password) => user === 'u' && password?.toString() === 'right' });
        const { references, logger } = testReferences();
        const connection = f.connection(guarded.url, 'credential.username', 'u', 'credential.password', 'wrong-secret-1',
            'options.reconnect_timeout', 50);
        connection.setReferences(references);
        const started = Date.now();
        await assert.rejects(connection.open(null), (err: ConnectionException) => {
            assert.equal(err.code, MqttErrorCode.ConnectRefused);
            assert.equal(err.details.getAsNullableInteger('reason_code'), 4);
            assert.ok(!err.message.includes('wrong-secret-1'));
            return true;
        });
        assert.ok(Date.now() - started < 5000, 'does not wait for connect_timeout');
        const count = guarded.broker.connectionCount();
        await delay(300);
        assert.equal(guarded.broker.connectionCount(), count, 'no retry');
        assert.ok(!logger.text().includes('wrong-secret-1'), 'the password is never logged');

        const good = f.connection(guarded.url, 'credential.username', 'u', 'credential.password', 'right');
        good.setReferences(references);
        await good.open(null);
        await good.close(null);
        const viaUri = f.connection(`mqtt://u:right@127.0.0.1:${guarded.port}`);
        await viaUri.open(null);
        await viaUri.close(null);
        assert.ok(!logger.text().includes('right@'), 'no user info in logs');
    });

    it('never shows a password: not in logs of a failing and a succeeding open, errors, toString, JSON or inspect', async (t) => {
        const f = fixture(t);
        const broker = await brokerWithUser('svc', 'g00d-S3cret', 'stored', 'st0re-S3cret');
        f.defer(() => broker.stop());
        const secrets = ['g00d-S3cret', 'b4d-S3cret', 'ur1-S3cret', 'st0re-S3cret'];
        const store = await storeWith('mqtt', 'username', 'stored', 'password', 'st0re-S3cret');
        const { references, logger } = testReferences();
        const withStore = References.fromTuples(STORE, store, new Descriptor('pip-services', 'logger', 'capture', 'store', '1.0'), logger);
        const errors: unknown[] = [];
        const components: (MqttConnection | MqttMessageQueue)[] = [];
        const attempt = async (component: MqttConnection | MqttMessageQueue, refs: References): Promise<void> => {
            components.push(component);
            component.setReferences(refs);
            try {
                await component.open(null);
                assert.ok(JSON.stringify(component).length > 0);
            } catch (err) {
                errors.push(err);
            } finally {
                await component.close(null);
            }
        };
        for (const [password, uri] of [
            ['g00d-S3cret', broker.url],
            ['b4d-S3cret', broker.url],
            [undefined, broker.url.replace('mqtt://', 'mqtt://svc:ur1-S3cret@')],
        ] as const) {
            const connection = new MqttConnection();
            connection.configure(ConfigParams.fromTuples('connection.uri', uri,
                ...(password !== undefined ? ['credential.username', 'svc', 'credential.password', password] : []),
                'options.connect_timeout', 3000));
            await attempt(connection, references);
            const queue = new MqttMessageQueue('jobs');
            queue.configure(ConfigParams.fromTuples('connection.uri', uri,
                ...(password !== undefined ? ['credential.username', 'svc', 'credential.password', password] : []),
                'options.connect_timeout', 3000));
            await attempt(queue, references);
        }
        const fromStore = new MqttConnection();
        fromStore.configure(ConfigParams.fromTuples('connection.uri', broker.url, 'credential.store_key', 'mqtt'));
        await attempt(fromStore, withStore);

        assert.equal(errors.length, 4, 'the bad password and the uri password (wrong) fail, for a connection and a queue');
        const shown = everythingShown(logger, errors, components);
        assert.ok(logger.entries.length > 0, 'something was logged');
        for (const secret of secrets) assert.ok(!shown.includes(secret), `${secret} was shown`);
        assert.match(JSON.stringify(components[0]), /"credential\.password":"\*\*\*"/);
        assert.match(inspect(components[4]), /mqtt:\/\/svc:\*\*\*@127\.0\.0\.1/);
    });

    it('never shows a uri password that holds an unencoded ? in an open() error or its details', async () => {
        // WHATWG URL ends the authority at ?, # or / when what precedes looks like host:port.
        const connection = newConnection('mqtt://svc:2024?Spr1ng@127.0.0.1:1883');
        const err = await connection.open(null).then(() => null, (e: unknown) => e);
        const shown = [String(err), JSON.stringify(err), inspect(err)].join('\n');
        assert.ok(!shown.includes('Spr1ng'), shown);
    });

    for (const uri of ['mqtt://svc:#Spr1ng@127.0.0.1:1883', 'mqtt://svc:12/Spr1ng@127.0.0.1:1883', 'mqtt://svc:2024?Spr1ng@127.0.0.1:1883']) {
        it(`never shows the password of ${uri} in toJSON or inspect`, () => {
            const connection = newConnection(uri);
            const shown = JSON.stringify(connection) + inspect(connection);
            assert.ok(!shown.includes('Spr1ng'), shown);
        });
    }

    it('MqttMessageQueueFactory shows no secret in JSON.stringify or util.inspect', () => {
        const factory = new MqttMessageQueueFactory();
        factory.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://svc:S3cret-uri@127.0.0.1:1883', 'credential.password', 'S3cret-pw'));
        const shown = JSON.stringify(factory) + inspect(factory, { depth: 10 });
        assert.ok(!shown.includes('S3cret'), shown);
    });
});

describe('MqttConnection credentials on Mosquitto', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    it('authenticates against a password file, and refuses bad credentials once with the reason code', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto({ passwords: { alice: 'al1ce-pw', bob: 'b0b-pw' } });
        const { references, logger } = testReferences();
        const good = f.connection(broker.url, 'credential.username', 'alice', 'credential.password', 'al1ce-pw');
        good.setReferences(references);
        await good.open(null);
        await good.close(null);

        const store = new MemoryCredentialStore();
        await store.store(null as unknown as string, 'mqtt', CredentialParams.fromTuples('username', 'bob', 'password', 'b0b-pw'));
        const fromStore = f.connection(broker.url, 'credential.store_key', 'mqtt');
        fromStore.setReferences(References.fromTuples(
            new Descriptor('pip-services', 'credential-store', 'memory', 'default', '1.0'), store,
            new Descriptor('pip-services', 'logger', 'capture', 'default', '1.0'), logger,
        ));
        await fromStore.open(null);
        await fromStore.close(null);

        const bad = f.connection(broker.url, 'credential.username', 'alice', 'credential.password', 'wr0ng-pw',
            'options.reconnect_timeout', 50);
        bad.setReferences(references);
        await assert.rejects(bad.open(null), (err: ConnectionException) => {
            assert.ok(err instanceof ConnectionException);
            assert.equal(err.code, MqttErrorCode.ConnectRefused);
            // Mosquitto 2 answers a bad password with "not authorized" (5).
            assert.equal(err.details.getAsNullableInteger('reason_code'), 5);
            return true;
        });
        const anonymous = f.connection(broker.url);
        await assert.rejects(anonymous.open(null), { code: MqttErrorCode.ConnectRefused });

        const logged = logger.text();
        for (const secret of ['al1ce-pw', 'b0b-pw', 'wr0ng-pw']) assert.ok(!logged.includes(secret), `${secret} logged`);
    });
});
