import { mosquittoSkip, startAedes, startMosquitto } from '../helpers/brokers';
import { describeConnectionConformance } from './MqttConnectionConformance';

describeConnectionConformance('aedes', () => startAedes(), false);
describeConnectionConformance('mosquitto', () => startMosquitto(), mosquittoSkip());
