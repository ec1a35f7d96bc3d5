import { mosquittoSkip, startAedes, startMosquitto } from '../helpers/brokers';
import { describeQueueConformance } from './MqttQueueConformance';

describeQueueConformance('the embedded broker (Aedes)', () => startAedes(), false);
describeQueueConformance('Mosquitto', () => startMosquitto(), mosquittoSkip());
