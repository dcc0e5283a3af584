"""The lesson's reference script, kept verbatim except where marked, to time the harness against it.

Changes: the corpus path, epoch count and direction come from SEED_CORPUS, SEED_EPOCHS and
SEED_BIDIRECTIONAL; each epoch is timed (CUDA synchronised); the plot is replaced by one JSON line.
Run:  SEED_CORPUS=../shared/data/pg35.txt SEED_EPOCHS=20 python benchmarks/seed_reference.py
"""
import requests
import re
import collections
import random
import torch
import math
from torch import nn
from torch.nn import functional as F
import json, os, time

# # 获取数据
# url = "https://www.gutenberg.org/cache/epub/35/pg35.txt" 
# response = requests.get(url)
# with open('TimeMachine.txt', 'w', encoding='utf-8') as f:
#     f.write(response.text)

# 数据清洗
def read_time_machine():
    with open(os.environ.get('SEED_CORPUS', 'TimeMachine.txt'), 'r', encoding='utf-8') as f:
        lines = f.readlines()
    # 对每行进行清洗
    # 1.re.sub：去除非字母字符
    # 2.strip：去除字符串首尾的空白字符
    # 3.lower：所有大写字母转为小写字母
    cleaned_lines = [re.sub('[^A-Za-z]+', ' ', line).strip().lower() for line in lines]
    # 对处理后的列表，删除里面的空字符串
    return [line for line in cleaned_lines if line]

# 词元化
def tokenize(lines, token='word'):
    # 将⽂本⾏拆分为单词或字符词元
    if token == 'word':
        return [line.split() for line in lines]
    elif token == 'char':
        return [list(line) for line in lines]
    else:
        print('错误：未知词元类型：' + token)
        
# 构建词表
class Vocab:
    def __init__(self, tokens=None, min_freq=0, reserved_tokens=None):
        if tokens is None:
            tokens = []
        if reserved_tokens is None:
            reserved_tokens = []
        # 按出现频率排序
        counter = count_corpus(tokens)
        self._token_freqs = sorted(counter.items(), key=lambda x: x[1], reverse=True)
        # 未知词元的索引为0
        self.idx_to_token = ['<unk>'] + reserved_tokens
        self.token_to_idx = {token: idx for idx, token in enumerate(self.idx_to_token)}
        for token, freq in self._token_freqs:
            if freq < min_freq:
                break
            if token not in self.token_to_idx:
                self.idx_to_token.append(token)
                self.token_to_idx[token] = len(self.idx_to_token) - 1
                
    def __len__(self):
        return len(self.idx_to_token)
        
    def __getitem__(self, tokens):
        if not isinstance(tokens, (list, tuple)):
            return self.token_to_idx.get(tokens, self.unk)
        return [self.__getitem__(token) for token in tokens]
        
    def to_tokens(self, indices):
        if not isinstance(indices, (list, tuple)):
            return self.idx_to_token[indices]
        return [self.idx_to_token[index] for index in indices]
        
    @property
    def unk(self): # 未知词元的索引为0
        return 0
        
    @property
    def token_freqs(self):
        return self._token_freqs
            
# 统计词元的频率
def count_corpus(tokens):
    # 这⾥的tokens是1D列表或2D列表
    if len(tokens) == 0 or isinstance(tokens[0], list):
        # 将词元列表展平成⼀个列表
        tokens = [token for line in tokens for token in line]
    return collections.Counter(tokens)

# 返回时光机器数据集的词元索引列表和词表（词元为单词），max_tokens用于截断
def load_corpus_time_machine(max_tokens=-1):
    lines = read_time_machine()
    tokens = tokenize(lines,'char')
    vocab = Vocab(tokens)
    
    # 因为时光机器数据集中的每个⽂本⾏不⼀定是⼀个句⼦或⼀个段落，
    # 所以将所有⽂本⾏展平到⼀个列表中
    corpus = [vocab[token] for line in tokens for token in line]
    if max_tokens > 0:
        corpus = corpus[:max_tokens]
    return corpus, vocab

# 使⽤随机抽样⽣成⼀个⼩批量⼦序列
# corpus是序列列表，batch_size是批量大小，num_steps是时间步数
def seq_data_iter_random(corpus, batch_size, num_steps):
    # 从随机偏移量开始对序列进⾏分区，随机范围包括num_steps-1
    corpus = corpus[random.randint(0, num_steps - 1):]
    # 减去1，是因为我们需要考虑标签
    num_subseqs = (len(corpus) - 1) // num_steps
    # ⻓度为num_steps的⼦序列的起始索引
    initial_indices = list(range(0, num_subseqs * num_steps, num_steps))
    # 在随机抽样的迭代过程中，
    # 来⾃两个相邻的、随机的、⼩批量中的⼦序列不⼀定在原始序列上相邻
    random.shuffle(initial_indices)
    
    def data(pos):
        # 返回从pos位置开始的⻓度为num_steps的序列
        return corpus[pos: pos + num_steps]
        
    num_batches = num_subseqs // batch_size
    for i in range(0, batch_size * num_batches, batch_size):
        # 在这⾥，initial_indices包含⼦序列的随机起始索引
        initial_indices_per_batch = initial_indices[i: i + batch_size]
        X = [data(j) for j in initial_indices_per_batch]
        Y = [data(j + 1) for j in initial_indices_per_batch]
        yield torch.tensor(X), torch.tensor(Y)
        
# 使⽤顺序分区⽣成⼀个⼩批量⼦序列
# corpus是序列列表，batch_size是批量大小，num_steps是时间步数
def seq_data_iter_sequential(corpus, batch_size, num_steps):
    # 从随机偏移量开始划分序列
    offset = random.randint(0, num_steps)
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    Xs = torch.tensor(corpus[offset: offset + num_tokens])
    Ys = torch.tensor(corpus[offset + 1: offset + 1 + num_tokens])
    Xs, Ys = Xs.reshape(batch_size, -1), Ys.reshape(batch_size, -1)
    num_batches = Xs.shape[1] // num_steps
    for i in range(0, num_steps * num_batches, num_steps):
        X = Xs[:, i: i + num_steps]
        Y = Ys[:, i: i + num_steps]
        yield X, Y
        
# 加载序列数据的迭代器
class SeqDataLoader:
    def __init__(self, batch_size, num_steps, use_random_iter, max_tokens):
        if use_random_iter:
            self.data_iter_fn = seq_data_iter_random
        else:
            self.data_iter_fn = seq_data_iter_sequential
        self.corpus, self.vocab = load_corpus_time_machine(max_tokens)
        self.batch_size, self.num_steps = batch_size, num_steps
    
    def __iter__(self):
        return self.data_iter_fn(self.corpus, self.batch_size, self.num_steps)
        
# 返回数据迭代器和词表
def load_data_time_machine(batch_size, num_steps, use_random_iter=False, max_tokens=10000):
    data_iter = SeqDataLoader(batch_size, num_steps, use_random_iter, max_tokens)
    return data_iter, data_iter.vocab

# 循环神经⽹络模型
class RNNModel(nn.Module):
    def __init__(self, rnn_layer, vocab_size, **kwargs):
        super(RNNModel, self).__init__(**kwargs)
        self.rnn = rnn_layer
        self.vocab_size = vocab_size
        self.num_hiddens = self.rnn.hidden_size
        # 如果RNN是双向的（之后将介绍），num_directions应该是2，否则应该是1
        if not self.rnn.bidirectional:
            self.num_directions = 1
            self.linear = nn.Linear(self.num_hiddens, self.vocab_size)
        else:
            self.num_directions = 2
            self.linear = nn.Linear(self.num_hiddens * 2, self.vocab_size)

    def forward(self, inputs, state):
        X = F.one_hot(inputs.T.long(), self.vocab_size)
        X = X.to(torch.float32)
        Y, state = self.rnn(X, state)
        # 全连接层首先将Y的形状改为(时间步数*批量大⼩,隐藏单元数)
        # 它的输出形状是(时间步数*批量大⼩,词表大⼩)。
        output = self.linear(Y.reshape((-1, Y.shape[-1])))
        return output, state

    def begin_state(self, device, batch_size=1):
        if not isinstance(self.rnn, nn.LSTM):
            # nn.GRU以张量作为隐状态
            return torch.zeros((self.num_directions * self.rnn.num_layers,
                                batch_size, self.num_hiddens), device=device)
        else:
            # nn.LSTM以元组作为隐状态
            return (torch.zeros((
                self.num_directions * self.rnn.num_layers,
                batch_size, self.num_hiddens), device=device),
                    torch.zeros((
                        self.num_directions * self.rnn.num_layers,
                        batch_size, self.num_hiddens), device=device))

# 预测新字符
# prefix：输入字符；num_preds：预测字符数；net：使用的网络模型；vocab：词表
def predict(prefix, num_preds, net, vocab, device):
    state = net.begin_state(batch_size=1, device=device)
    outputs = [vocab[prefix[0]]]
    get_input = lambda: torch.tensor([outputs[-1]], device=device).reshape((1, 1))
    for y in prefix[1:]: # 预热期
        _, state = net(get_input(), state)
        outputs.append(vocab[y])
    for _ in range(num_preds): # 预测num_preds步
        y, state = net(get_input(), state)
        outputs.append(int(y.argmax(dim=1).reshape(1)))
    return ''.join([vocab.idx_to_token[i] for i in outputs])

# 梯度裁剪
def grad_clipping(net, theta):
    if isinstance(net, nn.Module):
        params = [p for p in net.parameters() if p.requires_grad]
    else:
        params = net.params
    norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
    if norm > theta:
        for param in params:
            param.grad[:] *= theta / norm

# 小批量随机梯度下降
def sgd(params, lr, batch_size):
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()

# 训练一个迭代周期
def train_epoch(net, train_iter, loss, updater, device, use_random_iter):
    state = None
    total_loss = 0.0  # 累计总损失
    total_tokens = 0  # 累计总词元数
    
    for X, Y in train_iter:
        if state is None or use_random_iter:
            # 在第⼀次迭代或使⽤随机抽样时初始化state
            state = net.begin_state(batch_size=X.shape[0], device=device)
        else:
            if isinstance(net, nn.Module) and not isinstance(state, tuple):
                # state对于nn.GRU是个张量
                state.detach_()
            else:
                # state对于nn.LSTM或对于我们从零开始实现的模型是个张量
                for s in state:
                    s.detach_()
        y = Y.T.reshape(-1)
        X, y = X.to(device), y.to(device)
        y_hat, state = net(X, state)
        l = loss(y_hat, y.long()).mean()
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            l.backward()
            grad_clipping(net, 1)
            updater.step()
        else:
            l.backward()
            grad_clipping(net, 1)
            # 因为已经调⽤了mean函数
            updater(batch_size=1)
            
        # 累计损失和词元数
        total_loss += l.item() * y.numel()
        total_tokens += y.numel()
    return math.exp(total_loss / total_tokens)
    
# 训练模型
def train(net, train_iter, vocab, lr, num_epochs, device,
              use_random_iter=False):
    loss = nn.CrossEntropyLoss()
    perplexities = []  # 存储每次迭代的困惑度
    
    # 初始化
    if isinstance(net, nn.Module):
        updater = torch.optim.SGD(net.parameters(), lr)
    else:
        updater = lambda batch_size: sgd(net.params, lr, batch_size)
    
    # 训练和预测
    for epoch in range(num_epochs):
        t0 = time.perf_counter()
        ppl = train_epoch(net, train_iter, loss, updater, device, use_random_iter)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        EPOCH_SECONDS.append(time.perf_counter() - t0)
        perplexities.append(ppl)  # 记录当前epoch的困惑度
        
        # 每50个周期打印一次中间结果
        if (epoch + 1) % 50 == 0:
            print(f"Epoch [{epoch + 1}/{num_epochs}], Perplexity: {ppl:.5f}")

    # 训练结束：输出最终结果
    print(f"Final Perplexity: {ppl:.5f} (on {device})")
    return perplexities

# 加载数据集
batch_size, num_steps = 32, 35
train_iter, vocab = load_data_time_machine(batch_size, num_steps)

# 词表大小，隐藏节点数，隐藏层数
vocab_size, num_hiddens, num_layers = len(vocab), 256, 2
# 指定GPU
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# 迭代次数，学习率
num_epochs, lr = int(os.environ.get('SEED_EPOCHS', 500)), 1
num_inputs = vocab_size
# 将之前的RNN隐藏层替换为LSTM隐藏层
lstm_layer = nn.LSTM(num_inputs, num_hiddens, num_layers, bidirectional=os.environ.get('SEED_BIDIRECTIONAL') == '1')
model = RNNModel(lstm_layer, len(vocab))
model = model.to(device)

EPOCH_SECONDS = []
perplexities = train(model, train_iter, vocab, lr, num_epochs, device)

# 用于预测下一个词元的序列
prefix = "time traveller"
# 预测50个字符，训练参数存放在model中
print(predict(prefix, 50, model, vocab, device))

# Added for side-by-side timing: one JSON line with every epoch's seconds and perplexity.
print(json.dumps({"epoch_seconds": EPOCH_SECONDS, "perplexities": perplexities,
                  "sample": predict(prefix, 50, model, vocab, device)}))
