import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, it } from 'node:test';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';

import { EmbeddedBroker, type EmbeddedBrokerOptions } from '../../dev/EmbeddedBroker';
import { parseSharedFilter } from '../../dev/SharedSubscriptions';
import { delay, uniqueTopic, waitFor } from '../helpers/net';

const TEST = { timeout: 20_000 };
/** How long to keep listening after the expected messages arrived, to catch extra ones. */
const SETTLE_MS = 200;

interface Received {
    topic: string;
    payload: string;
    qos: number;
    retain: boolean;
}

const clients = new Set<MqttClient>();

/** Connects without automatic reconnects; `afterEach` ends the client. */
async function connect(broker: EmbeddedBroker, options: IClientOptions = {}): Promise<MqttClient> {
    const client = await connectAsync(broker.url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    clients.add(client);
    return client;
}

/** Connects and records every message the client receives, in order. */
async function member(broker: EmbeddedBroker, options: IClientOptions = {}): Promise<[MqttClient, Received[]]> {
    const client = await connect(broker, options);
    const inbox: Received[] = [];
    client.on('message', (topic, payload, packet) => {
        inbox.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain });
    });
    return [client, inbox];
}

async function endClients(): Promise<void> {
    const all = [...clients];
    clients.clear();
    await Promise.all(all.map((client) => client.endAsync(true)));
}

/** Publishes payloads `${prefix}0` .. `${prefix}${count - 1}` to `topic`, one after the other. */
async function publishNumbered(publisher: MqttClient, topic: string, count: number, qos: 0 | 1 | 2 = 1, prefix = ''): Promise<string[]> {
    const payloads = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
    for (const payload of payloads) {
        await publisher.publishAsync(topic, payload, { qos });
    }
    return payloads;
}

/** Waits until the inboxes hold `count` messages between them, then a little longer for extra ones. */
async function settle(count: number, ...inboxes: Received[][]): Promise<void> {
    const total = (): number => inboxes.reduce((sum, inbox) => sum + inbox.length, 0);
    await waitFor(() => total() >= count, 5000, `${count} messages (have ${total()})`);
    await delay(SETTLE_MS);
}

/** Asserts that the inboxes together hold exactly `expected`: none lost, none duplicated. */
function assertEachOnce(expected: string[], ...inboxes: Received[][]): void {
    const got = inboxes.flatMap((inbox) => inbox.map((m) => m.payload));
    assert.deepEqual([...got].sort(), [...expected].sort());
}

function payloads(inbox: Received[]): string[] {
    return inbox.map((m) => m.payload);
}

describe('parseSharedFilter', () => {
    it('splits well-formed shared filters and rejects everything else', () => {
        assert.deepEqual(parseSharedFilter('$share/g/a/+'), { group: 'g', filter: 'a/+' });
        assert.deepEqual(parseSharedFilter('$share/g/#'), { group: 'g', filter: '#' });
        assert.deepEqual(parseSharedFilter('$share/g//'), { group: 'g', filter: '/' });
        for (const topic of ['a/b', '$share', '$share/', '$share/g', '$share/g/', '$share//a', '$share/+/a', '$share/g#/a', '$SHARE/g/a']) {
            assert.equal(parseSharedFilter(topic), undefined, topic);
        }
    });
});

describe('EmbeddedBroker shared subscriptions', { timeout: 60_000 }, () => {
    let broker: EmbeddedBroker;
    before(async () => {
        broker = await EmbeddedBroker.start();
    });
    afterEach(endClients);
    after(async () => {
        await endClients();
        await broker.stop();
    });

    it('splits 100 QoS 1 messages between two members round robin, none lost, none duplicated', TEST, async () => {
        const topic = uniqueTopic('share');
        const [a, inboxA] = await member(broker);
        const [b, inboxB] = await member(broker);
        assert.deepEqual(await a.subscribeAsync(`$share/g/${topic}`, { qos: 1 }), [{ topic: `$share/g/${topic}`, qos: 1 }]);
        await b.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        const publisher = await connect(broker);

        const sent = await publishNumbered(publisher, topic, 100);
        await settle(100, inboxA, inboxB);
        assertEachOnce(sent, inboxA, inboxB);
        assert.equal(inboxA.length, 50);
        assert.equal(inboxB.length, 50);
        for (const m of [...inboxA, ...inboxB]) {
            assert.deepEqual([m.topic, m.qos, m.retain], [topic, 1, false]);
        }
        // Strictly alternating, and each member gets its share in publishing order.
        const parity = Number(inboxA[0].payload) % 2;
        assert.deepEqual(payloads(inboxA), sent.filter((_, i) => i % 2 === parity));
        assert.deepEqual(payloads(inboxB), sent.filter((_, i) => i % 2 !== parity));
    });

    it('matches a wildcard shared filter like a plain one', TEST, async () => {
        const base = uniqueTopic('share');
        const [a, inboxA] = await member(broker);
        const [b, inboxB] = await member(broker);
        await a.subscribeAsync(`$share/g/${base}/+`, { qos: 1 });
        await b.subscribeAsync(`$share/g/${base}/+`, { qos: 1 });
        const publisher = await connect(broker);

        const sent: string[] = [];
        for (let i = 0; i < 10; i++) {
            sent.push(...(await publishNumbered(publisher, `${base}/t${i}`, 1, 1, `t${i}-`)));
        }
        await publisher.publishAsync(`${base}/x/deeper`, 'not matched', { qos: 1 });
        await publisher.publishAsync(base, 'not matched either', { qos: 1 });
        await settle(10, inboxA, inboxB);
        assertEachOnce(sent, inboxA, inboxB);
        assert.equal(inboxA.length, 5);
        assert.equal(inboxB.length, 5);
        assert.deepEqual([...inboxA, ...inboxB].map((m) => m.topic).sort(), sent.map((p) => `${base}/${p.split('-')[0]}`).sort());
    });

    it('gives every message to each group on the same filter and to plain subscribers', TEST, async () => {
        const topic = uniqueTopic('share');
        const [g1a, inbox1a] = await member(broker);
        const [g1b, inbox1b] = await member(broker);
        const [g2a, inbox2a] = await member(broker);
        const [plain, inboxPlain] = await member(broker);
        await g1a.subscribeAsync(`$share/one/${topic}`, { qos: 1 });
        await g1b.subscribeAsync(`$share/one/${topic}`, { qos: 1 });
        await g2a.subscribeAsync(`$share/two/${topic}`, { qos: 1 });
        await plain.subscribeAsync(topic, { qos: 1 });
        const publisher = await connect(broker);

        const sent = await publishNumbered(publisher, topic, 20);
        await settle(60, inbox1a, inbox1b, inbox2a, inboxPlain);
        assertEachOnce(sent, inbox1a, inbox1b);
        assert.equal(inbox1a.length, 10);
        assertEachOnce(sent, inbox2a);
        assert.deepEqual(payloads(inboxPlain), sent);
    });

    it('gives a client with a plain and a shared subscription on one topic each message once', TEST, async () => {
        const topic = uniqueTopic('share');
        const [both, inboxBoth] = await member(broker);
        const [other, inboxOther] = await member(broker);
        await both.subscribeAsync([`$share/g/${topic}`, topic], { qos: 1 });
        await other.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        const publisher = await connect(broker);

        const sent = await publishNumbered(publisher, topic, 10);
        await settle(15, inboxBoth, inboxOther);
        assert.deepEqual(payloads(inboxBoth), sent);
        // The group still delivers each message to one member: `both` got its share as its one copy.
        assert.equal(inboxOther.length, 5);
    });

    it('gives the remaining member everything once the other unsubscribes', TEST, async () => {
        const topic = uniqueTopic('share');
        const [a, inboxA] = await member(broker);
        const [b, inboxB] = await member(broker);
        await a.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        await b.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        const publisher = await connect(broker);

        const before = await publishNumbered(publisher, topic, 10, 1, 'before-');
        await settle(10, inboxA, inboxB);
        assert.equal(inboxA.length, 5);
        await a.unsubscribeAsync(`$share/g/${topic}`);
        inboxA.length = 0;
        inboxB.length = 0;

        const afterwards = await publishNumbered(publisher, topic, 10, 1, 'after-');
        await settle(10, inboxA, inboxB);
        assert.deepEqual(payloads(inboxB), afterwards);
        assert.deepEqual(inboxA, []);
        assert.notDeepEqual(before, afterwards);

        // Re-joining makes it a member again.
        await a.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        inboxB.length = 0;
        const again = await publishNumbered(publisher, topic, 10, 1, 'again-');
        await settle(10, inboxA, inboxB);
        assertEachOnce(again, inboxA, inboxB);
        assert.equal(inboxA.length, 5);
    });

    for (const how of ['DISCONNECT', 'a dropped connection'] as const) {
        it(`gives the remaining member everything once the other leaves by ${how}`, TEST, async () => {
            const topic = uniqueTopic('share');
            const [a, inboxA] = await member(broker);
            const [b, inboxB] = await member(broker);
            await a.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
            await b.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
            const publisher = await connect(broker);
            const connected = broker.clientCount();

            await publishNumbered(publisher, topic, 4, 1, 'before-');
            await settle(4, inboxA, inboxB);
            assert.equal(inboxA.length, 2);
            if (how === 'DISCONNECT') {
                await a.endAsync();
            } else {
                a.stream.destroy();
            }
            await waitFor(() => broker.clientCount() === connected - 1, 5000, 'the broker to drop the member');
            inboxB.length = 0;

            const sent = await publishNumbered(publisher, topic, 20, 1, 'after-');
            await settle(20, inboxB);
            assert.deepEqual(payloads(inboxB), sent);
        });
    }

    it('delivers at the lower of the message QoS and the QoS granted to the member', TEST, async () => {
        const topic = uniqueTopic('share');
        const [low, inboxLow] = await member(broker);
        const [high, inboxHigh] = await member(broker);
        assert.deepEqual(await low.subscribeAsync(`$share/g/${topic}`, { qos: 0 }), [{ topic: `$share/g/${topic}`, qos: 0 }]);
        await high.subscribeAsync(`$share/g/${topic}`, { qos: 2 });
        const publisher = await connect(broker);

        await publishNumbered(publisher, topic, 4, 1, 'qos1-');
        await publishNumbered(publisher, topic, 4, 2, 'qos2-');
        await publishNumbered(publisher, topic, 4, 0, 'qos0-');
        await settle(12, inboxLow, inboxHigh);
        assert.equal(inboxLow.length, 6);
        for (const m of inboxLow) {
            assert.equal(m.qos, 0, m.payload);
        }
        for (const m of inboxHigh) {
            assert.equal(m.qos, Number(m.payload.slice(3, 4)), m.payload);
        }
        assert.deepEqual(new Set(inboxHigh.map((m) => m.qos)), new Set([0, 1, 2]));

        // Subscribing again with another QoS updates the grant and keeps one membership.
        assert.deepEqual(await low.subscribeAsync(`$share/g/${topic}`, { qos: 1 }), [{ topic: `$share/g/${topic}`, qos: 1 }]);
        inboxLow.length = 0;
        inboxHigh.length = 0;
        const sent = await publishNumbered(publisher, topic, 10, 1, 'regranted-');
        await settle(10, inboxLow, inboxHigh);
        assertEachOnce(sent, inboxLow, inboxHigh);
        assert.equal(inboxLow.length, 5);
        assert.deepEqual(new Set(inboxLow.map((m) => m.qos)), new Set([1]));
    });

    it('sends no retained message on a shared subscription, and live ones without the retain flag', TEST, async () => {
        const topic = uniqueTopic('share');
        const publisher = await connect(broker);
        await publisher.publishAsync(topic, 'retained', { qos: 1, retain: true });
        // The literal shared filter as a topic name, retained: the literal Aedes subscription must not deliver it.
        await publisher.publishAsync(`$share/g/${topic}`, 'literal', { qos: 1, retain: true });

        const [shared, inboxShared] = await member(broker);
        await shared.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        const [plain, inboxPlain] = await member(broker);
        await plain.subscribeAsync(topic, { qos: 1 });
        // The plain subscriber does get the retained message, so it is there to be (wrongly) sent.
        await settle(1, inboxPlain);
        assert.deepEqual(inboxPlain, [{ topic, payload: 'retained', qos: 1, retain: true }]);
        assert.deepEqual(inboxShared, []);

        await publisher.publishAsync(`$share/g/${topic}`, 'literal again', { qos: 1 });
        await publisher.publishAsync(topic, 'live', { qos: 1, retain: true });
        await settle(1, inboxShared);
        assert.deepEqual(inboxShared, [{ topic, payload: 'live', qos: 1, retain: false }]);
        await publisher.publishAsync(topic, '', { qos: 1, retain: true }); // clear the retained message
    });

    it('does not match $ topics with a filter that starts with a wildcard', TEST, async () => {
        const name = randomBytes(4).toString('hex');
        const [hash, inboxHash] = await member(broker);
        const [plus, inboxPlus] = await member(broker);
        const [dollar, inboxDollar] = await member(broker);
        await hash.subscribeAsync('$share/g/#', { qos: 1 });
        await plus.subscribeAsync('$share/g/+/+', { qos: 1 });
        await dollar.subscribeAsync(`$share/g/$${name}/#`, { qos: 1 });
        const publisher = await connect(broker);

        // Every SUBSCRIBE above also made Aedes publish to $SYS/<id>/new/subscribes.
        await publisher.publishAsync(`$${name}/x`, 'dollar', { qos: 1 });
        await publisher.publishAsync(`plain-${name}/x`, 'plain', { qos: 1 });
        await settle(3, inboxHash, inboxPlus, inboxDollar);
        assert.deepEqual(inboxDollar.map((m) => [m.topic, m.payload]), [[`$${name}/x`, 'dollar']]);
        assert.deepEqual(inboxHash.map((m) => [m.topic, m.payload]), [[`plain-${name}/x`, 'plain']]);
        assert.deepEqual(inboxPlus.map((m) => [m.topic, m.payload]), [[`plain-${name}/x`, 'plain']]);
    });

    it('keeps a persistent member in its group across a reconnect', TEST, async () => {
        const topic = uniqueTopic('share');
        const clientId = `share-${randomBytes(4).toString('hex')}`;
        const [persistent] = await member(broker, { clientId, clean: false });
        await persistent.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        const [other, inboxOther] = await member(broker);
        await other.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        const publisher = await connect(broker);
        const connected = broker.clientCount();
        await persistent.endAsync();
        await waitFor(() => broker.clientCount() === connected - 1, 5000, 'the broker to drop the member');

        // While it is away the other member gets everything (nothing is queued for the group).
        const offline = await publishNumbered(publisher, topic, 6, 1, 'offline-');
        await settle(6, inboxOther);
        assert.deepEqual(payloads(inboxOther), offline);

        const [back, inboxBack] = await member(broker, { clientId, clean: false });
        assert.equal(back.connected, true);
        inboxOther.length = 0;
        const online = await publishNumbered(publisher, topic, 20, 1, 'online-');
        await settle(20, inboxBack, inboxOther);
        // Restored without a new SUBSCRIBE; the first message or so may still go to the other member.
        assertEachOnce(online, inboxBack, inboxOther);
        assert.ok(inboxBack.length >= 9, `the restored member got ${inboxBack.length} of 20`);
        assert.ok(inboxBack.every((m) => m.qos === 1));
        await back.unsubscribeAsync(`$share/g/${topic}`);
    });

    it('refuses malformed shared filters with SUBACK 0x80 and delivers nothing to them', TEST, async () => {
        const topic = uniqueTopic('share');
        const [client, inbox] = await member(broker);
        const filters = ['$share/g', '$share//' + topic, '$share/+/' + topic, '$share/g/'];
        await assert.rejects(client.subscribeAsync(filters, { qos: 1 }), (err: Error & { packet?: { granted?: number[] } }) => {
            assert.deepEqual(err.packet?.granted, [128, 128, 128, 128]);
            return true;
        });
        const publisher = await connect(broker);
        await publisher.publishAsync(topic, 'x', { qos: 1 });
        await publisher.publishAsync('$share/g', 'y', { qos: 1 });
        await delay(SETTLE_MS);
        assert.deepEqual(inbox, []);
    });
});

describe('EmbeddedBroker shared subscriptions with authorizeSubscribe', { timeout: 30_000 }, () => {
    let broker: EmbeddedBroker;
    const seen: string[] = [];
    before(async () => {
        const options: EmbeddedBrokerOptions = {
            authorizeSubscribe: (_clientId, topic) => {
                seen.push(topic);
                return !topic.startsWith('$share/denied/');
            },
        };
        broker = await EmbeddedBroker.start(options);
    });
    after(async () => {
        await endClients();
        await broker.stop();
    });

    it('passes the full $share filter to the check and delivers nothing on a refused one', TEST, async () => {
        const topic = uniqueTopic('share');
        const [allowed, inboxAllowed] = await member(broker);
        const [denied, inboxDenied] = await member(broker);
        await allowed.subscribeAsync(`$share/ok/${topic}`, { qos: 1 });
        await assert.rejects(denied.subscribeAsync(`$share/denied/${topic}`, { qos: 1 }), (err: Error & { packet?: { granted?: number[] } }) => {
            assert.deepEqual(err.packet?.granted, [128]);
            return true;
        });
        assert.deepEqual(seen, [`$share/ok/${topic}`, `$share/denied/${topic}`]);

        const publisher = await connect(broker);
        const sent = await publishNumbered(publisher, topic, 5);
        await settle(5, inboxAllowed, inboxDenied);
        assert.deepEqual(payloads(inboxAllowed), sent);
        assert.deepEqual(inboxDenied, []);
    });
});
