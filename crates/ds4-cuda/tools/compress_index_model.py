# Not run by CI: a model of which token feeds which pooling slot, for compress_run (in order)
# against compress_rows + compress_state (parallel, runs of >= 16 tokens); run it after
# changing either kernel's indexing: python3 crates/ds4-cuda/tools/compress_index_model.py
# Index-logic model of compress_run (sequential) vs compress_rows + compress_state (parallel).
import random
EMPTY=None
def seq_run(state, toks, pos0, ratio, coff, d):
    width=coff*d; fkv,fsc=state; rows={}
    for t,q in enumerate(range(pos0,pos0+len(toks))):
        r=q%ratio; slot=ratio+r if coff==2 else r
        for c in range(coff):
            for j in range(d):
                col=j+c*d
                fkv[slot][col]=('kv',q,col); fsc[slot][col]=('sc',q,col)
        if (q+1)%ratio: continue
        row=[]
        for j in range(d):
            ent=[]
            for s in range(coff*ratio):
                col=d+j if (coff==2 and s>=ratio) else j
                ent.append((fkv[s][col],fsc[s][col]))
            row.append(ent)
        rows[(q+1)//ratio-1]=row
        if coff==2:
            for s in range(ratio):
                for col in range(width):
                    fkv[s][col]=fkv[s+ratio][col]; fsc[s][col]=fsc[s+ratio][col]
    return rows
def par_run(state, T, pos0, ratio, coff, d):
    width=coff*d; fkv,fsc=state; rows={}
    w0=pos0//ratio*ratio
    def tok(q,col):
        if q>=pos0: return (('kv',q,col),('sc',q,col))
        if q<0: return ((0.0),(EMPTY))
        slot=ratio+q%ratio if (coff==2 and q>=w0) else q%ratio
        return (fkv[slot][col],fsc[slot][col])
    nrows=(pos0+T)//ratio-pos0//ratio
    for b in range(nrows):
        p=(pos0//ratio+1+b)*ratio-1; ws=p+1-ratio
        row=[]
        for j in range(d):
            ent=[]
            for s in range(coff*ratio):
                prev= coff==2 and s<ratio
                q= ws-ratio+s if prev else ws+(s-(ratio if coff==2 else 0))
                col= d+j if (coff==2 and not prev) else j
                ent.append(tok(q,col))
            row.append(ent)
        rows[(p+1)//ratio-1]=row
    # state
    end=pos0+T; we=end//ratio*ratio
    for c in range(coff):
        for j in range(d):
            col=j+c*d
            if coff==2 and we>w0:
                for q in range(we-ratio,we):
                    r=q%ratio
                    if q>=pos0: kv,sc=('kv',q,col),('sc',q,col)
                    else: kv,sc=fkv[ratio+r][col],fsc[ratio+r][col]
                    fkv[r][col]=kv; fsc[r][col]=sc
            for q in range(max(we,pos0),end):
                r=q%ratio; slot=ratio+r if coff==2 else r
                fkv[slot][col]=('kv',q,col); fsc[slot][col]=('sc',q,col)
    return rows
def fresh(ratio,coff,d):
    return ([[0.0]*(coff*d) for _ in range(coff*ratio)],[[EMPTY]*(coff*d) for _ in range(coff*ratio)])
random.seed(1); checks=0
for trial in range(400):
    ratio=random.choice([4,8,128]); coff=random.choice([1,2]); d=2
    runs=[random.choice([1,3,16,17,ratio,2*ratio,5*ratio+3,random.randint(1,700)]) for _ in range(random.randint(1,6))]
    A=fresh(ratio,coff,d); B=fresh(ratio,coff,d); pos=0
    for T in runs:
        ra=seq_run(A,list(range(T)),pos,ratio,coff,d)
        if T>=16: rb=par_run(B,T,pos,ratio,coff,d)
        else: rb=seq_run(B,list(range(T)),pos,ratio,coff,d)
        assert ra.keys()==rb.keys(),(ratio,coff,runs)
        for k in ra:
            # entries with EMPTY score contribute nothing: compare the non-empty ones in order
            for ja,jb in zip(ra[k],rb[k]):
                ea=[e for e in ja if e[1] is not EMPTY]; eb=[e for e in jb if e[1] is not EMPTY]
                assert ea==eb,(ratio,coff,runs,k)
                # and where empties sit (slot order) must also match, for bit-identical sums
                assert [e[1] is EMPTY for e in ja]==[e[1] is EMPTY for e in jb]
            checks+=1
        pos+=T
print("ok, rows compared:",checks)
