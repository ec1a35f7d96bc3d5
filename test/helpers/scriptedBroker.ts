// A scripted MQTT 5 peer for the few broker answers no broker here gives: packets are parsed and
// written by mqtt-packet (MQTT.js's own codec); a test's handler decides what to answer.
import { createServer, type AddressInfo, type Socket } from 'node:net';

import * as mqttPacket from 'mqtt-packet';

import { HOST } from './net';

/**
 * Answers one packet from the client: `send` writes a packet back, `socket` is the connection.
 * PINGREQs are answered already.
 */
export type ScriptedHandler = (packet: mqttPacket.Packet, send: (packet: mqttPacket.Packet) => void, socket: Socket) => void;

/**
 * Starts a TCP server on a free port that speaks MQTT through `handler`, in the protocol version
 * of each client's CONNECT. Each connection gets its own parser. Used only where Mosquitto and
 * Aedes cannot produce the answer under test (MQTT 5 reason strings: Mosquitto 2.0 sends none and
 * Aedes has no MQTT 5; a QoS 2 publish answered with PUBACK, as RabbitMQ 3.x does).
 */
export async function startScriptedBroker(handler: ScriptedHandler): Promise<{ url: string; stop(): Promise<void> }> {
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
        socket.on('error', () => socket.destroy());
        const parser = mqttPacket.parser({ protocolVersion: 5 });
        // Answers in the protocol version the client's CONNECT asked for.
        let protocolVersion = 5;
        const send = (packet: mqttPacket.Packet): void => {
            if (!socket.destroyed) socket.write(mqttPacket.generate(packet, { protocolVersion }));
        };
        parser.on('packet', (packet: mqttPacket.Packet) => {
            if (packet.cmd === 'connect') protocolVersion = packet.protocolVersion ?? 4;
            // Every broker answers a ping; the handler still sees it (to track the keepalive, say).
            if (packet.cmd === 'pingreq') send({ cmd: 'pingresp' });
            handler(packet, send, socket);
        });
        parser.on('error', () => socket.destroy());
        socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    });
    await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, HOST, () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    return {
        url: `mqtt://${HOST}:${port}`,
        stop: async () => {
            for (const socket of sockets) socket.destroy();
            await new Promise<void>((resolve) => server.close(() => resolve()));
        },
    };
}
