// MqttMessageQueue receivers: listen() again or with another receiver while one is busy, endListen() before and after delivery.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MessageEnvelope, type IMessageQueue, type IMessageReceiver } from 'pip-services3-messaging-nodex';

import { delay, uniqueTopic, waitFor } from '../helpers/brokers';
import { CollectingReceiver, QueueFixture } from '../helpers/queues';

describe('MqttMessageQueue receivers', { timeout: 60000 }, () => {
    const fixture = QueueFixture.use();
    const shared = fixture.shared.bind(fixture);
    const queueOn = fixture.queueOn.bind(fixture);

    // listen() twice with the same receiver while a message is being handled: a second drain
    // starts, and the receiver gets the next message before it finished the previous one.
    it('listen(r) twice: r still gets its messages one at a time, in order', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('r4'), 'options.autosubscribe', true, 'options.qos', 1);
        await queue.open(null);
        let active = 0;
        let maxActive = 0;
        const done: string[] = [];
        const receiver: IMessageReceiver = {
            receiveMessage: async (m: MessageEnvelope, _q: IMessageQueue) => {
                active++; maxActive = Math.max(maxActive, active);
                await delay(m.getMessageAsString() === 'm1' ? 300 : 10);
                done.push(m.getMessageAsString());
                active--;
            },
        };
        queue.listen(null, receiver);
        for (const m of ['m1', 'm2', 'm3']) await queue.send(null, new MessageEnvelope('c', 't', m));
        await waitFor(() => active === 1, 2000, 'm1 being handled');
        queue.listen(null, receiver); // e.g. a restart of the consumer, or beginListen() after listen()
        await waitFor(() => done.length === 3, 3000, 'all three messages');
        assert.equal(maxActive, 1, 'the receiver was handed a message while still handling another');
        assert.deepEqual(done, ['m1', 'm2', 'm3']);
    });

    // listen(A) then listen(B) while A handles m1: after endListen() nothing reaches A but m1.
    it('listen(A), listen(B): A gets nothing after being replaced; B gets the rest in order', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('r8'), 'options.autosubscribe', true, 'options.qos', 1);
        await queue.open(null);
        const a: string[] = []; const b: string[] = [];
        let releaseA!: () => void;
        queue.listen(null, { receiveMessage: async (m: MessageEnvelope) => { a.push(m.getMessageAsString()); await new Promise<void>((r) => { releaseA = r; }); } });
        for (const m of ['m1', 'm2', 'm3']) await queue.send(null, new MessageEnvelope('c', 't', m));
        await waitFor(() => a.length === 1, 2000, 'm1 to A');
        queue.listen(null, { receiveMessage: (m: MessageEnvelope) => { b.push(m.getMessageAsString()); return Promise.resolve(); } });
        await waitFor(() => b.length === 2, 2000, 'B');
        releaseA();
        await queue.send(null, new MessageEnvelope('c', 't', 'm4'));
        await delay(200);
        assert.deepEqual(a, ['m1']);
        assert.deepEqual(b, ['m2', 'm3', 'm4']);
    });

    // endListen() does not cancel a beginListen() that has not started yet.
    it('beginListen() then endListen(): nothing is delivered to the receiver', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('d3'), 'options.autosubscribe', true, 'options.qos', 1);
        await queue.open(null);
        const receiver = new CollectingReceiver();
        queue.beginListen(null, receiver);
        queue.endListen(null);
        await queue.send(null, new MessageEnvelope('c', 't', 'm'));
        await delay(300);
        assert.deepEqual(receiver.got, [], 'the receiver got messages after endListen()');
        assert.equal(await queue.readMessageCount(), 1);
    });

    // a receiver stuck on one message blocks every later receiver, even after endListen()/close()/reopen.
    it('after endListen(), a new receiver is not blocked forever by the old one', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('d4'), 'options.autosubscribe', true, 'options.qos', 1);
        await queue.open(null);
        let stuckCalls = 0;
        queue.listen(null, { receiveMessage: () => { stuckCalls++; return new Promise<void>(() => undefined); } }); // never settles
        await queue.send(null, new MessageEnvelope('c', 't', 'stuck'));
        await waitFor(() => stuckCalls === 1, 5000, 'the first message taken');
        queue.endListen(null);
        await queue.close(null);
        await queue.open(null);
        const receiver = new CollectingReceiver();
        queue.listen(null, receiver);
        await queue.send(null, new MessageEnvelope('c', 't', 'next'));
        await delay(500);
        assert.deepEqual(receiver.got, ['next'], 'the new receiver never gets a message');
    });
});
